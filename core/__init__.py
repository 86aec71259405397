"""Anime Studio Bot core: settings, store, ComfyUI orchestration, media, library filing.

`core` never imports `bot` or `telegram`.
"""

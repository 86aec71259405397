"""Soundtracks: iTunes previews, a local music folder, mixing."""

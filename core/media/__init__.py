"""Media processing: probing, Telegram-ready photos and videos, thumbnails, character sheets.

Pure logic (sizes, bitrates, filter arguments, stderr parsing, metadata chunks) lives in
`limits`, `ffmpeg_parse` and `metadata`; everything that touches files or subprocesses runs off
the event loop (`asyncio.to_thread` for Pillow, asyncio subprocesses for ffmpeg).
"""

from __future__ import annotations

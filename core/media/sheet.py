"""Character sheet: a contact-sheet grid of a character's images with captions and a title.

Layout maths (`sheet_layout`) is pure; drawing runs in a worker thread. An unreadable tile is
drawn as a grey placeholder instead of failing the whole sheet.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from core.errors import InvalidInput, MediaError
from core.logs import get_logger
from core.media.images import OUTPUT_MAX_PIXELS, atomic_write, load_output_image
from core.media.imaging import encode_jpeg, to_rgb
from core.media.limits import TELEGRAM_PHOTO_MAX_BYTES

log = get_logger(__name__)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
    "C:/Windows/Fonts/arial.ttf",
)
BACKGROUND = (24, 24, 28)
TILE_BACKGROUND = (40, 40, 46)
TEXT_COLOUR = (235, 235, 240)
MAX_TILES = 48


@dataclass(frozen=True)
class SheetTile:
    path: Path
    caption: str


@dataclass(frozen=True)
class SheetLayout:
    width: int
    height: int
    columns: int
    rows: int
    boxes: list[tuple[int, int]]  # top-left of each image box
    tile: int
    caption_height: int
    title_height: int
    padding: int


def sheet_layout(
    count: int,
    *,
    tile: int = 320,
    columns: int | None = None,
    caption_height: int = 40,
    title_height: int = 64,
    padding: int = 16,
) -> SheetLayout:
    """Grid geometry for `count` tiles; columns default to a near-square grid (max 6)."""
    if count <= 0:
        raise ValueError("a sheet needs at least one tile")
    cols = columns if columns is not None else min(6, math.ceil(math.sqrt(count)))
    cols = max(1, min(cols, count))
    rows = math.ceil(count / cols)
    cell_h = tile + caption_height
    width = padding + cols * (tile + padding)
    height = title_height + padding + rows * (cell_h + padding)
    boxes = [
        (
            padding + (i % cols) * (tile + padding),
            title_height + padding + (i // cols) * (cell_h + padding),
        )
        for i in range(count)
    ]
    return SheetLayout(
        width=width,
        height=height,
        columns=cols,
        rows=rows,
        boxes=boxes,
        tile=tile,
        caption_height=caption_height,
        title_height=title_height,
        padding=padding,
    )


@lru_cache(maxsize=8)
def _font(size: int) -> Font:
    for candidate in _FONT_CANDIDATES:
        if Path(candidate).is_file():
            try:
                return ImageFont.truetype(candidate, size)
            except OSError:
                continue
    return ImageFont.load_default(size=size)


def ellipsize(text: str, max_width: float, measure: Callable[[str], float]) -> str:
    """`text` cut with "…" so that `measure(result) <= max_width` (one line, newlines dropped)."""
    text = " ".join(text.split())
    if measure(text) <= max_width:
        return text
    low, high = 0, len(text)
    while low < high:  # longest prefix that fits with the ellipsis
        mid = (low + high + 1) // 2
        if measure(text[:mid].rstrip() + "…") <= max_width:
            low = mid
        else:
            high = mid - 1
    return text[:low].rstrip() + "…" if low else "…"


def _fonts(tile: int) -> tuple[Font, Font]:
    return _font(max(12, tile // 16)), _font(max(18, tile // 9))


def _line_height(font: Font, factor: float) -> int:
    size = font.size if isinstance(font, ImageFont.FreeTypeFont) else 11
    return int(size * factor)


def sheet_geometry(count: int, *, tile: int = 320, columns: int | None = None) -> SheetLayout:
    """The layout `render_sheet` uses for `count` tiles (caption/title bands sized by font)."""
    caption_font, title_font = _fonts(tile)
    return sheet_layout(
        count,
        tile=tile,
        columns=columns,
        caption_height=_line_height(caption_font, 1.8),
        title_height=_line_height(title_font, 2.2),
    )


def _tile_image(path: Path, size: int) -> Image.Image | None:
    try:
        image = load_output_image(path, OUTPUT_MAX_PIXELS)
    except (MediaError, OSError) as exc:
        log.warning("sheet tile unreadable", path=path.name, error=str(exc))
        return None
    rgb, _icc = to_rgb(image, TILE_BACKGROUND)
    return ImageOps.contain(rgb, (size, size), Image.Resampling.LANCZOS)


def render_sheet(
    tiles: Sequence[SheetTile],
    title: str,
    *,
    tile: int = 320,
    columns: int | None = None,
    max_bytes: int = TELEGRAM_PHOTO_MAX_BYTES,
) -> bytes:
    """JPEG bytes of the sheet (blocking)."""
    if not tiles:
        raise InvalidInput(
            "no images for the sheet", user_message="This character has no images yet."
        )
    tiles = list(tiles)[:MAX_TILES]
    caption_font, title_font = _fonts(tile)
    layout = sheet_geometry(len(tiles), tile=tile, columns=columns)
    sheet = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)

    title_text = ellipsize(title, layout.width - 2 * layout.padding, title_font.getlength)
    draw.text(
        (layout.width / 2, layout.title_height / 2 + layout.padding / 2),
        title_text,
        font=title_font,
        fill=TEXT_COLOUR,
        anchor="mm",
    )
    for item, (left, top) in zip(tiles, layout.boxes, strict=True):
        draw.rectangle((left, top, left + tile - 1, top + tile - 1), fill=TILE_BACKGROUND)
        picture = _tile_image(item.path, tile)
        if picture is None:
            draw.text(
                (left + tile / 2, top + tile / 2),
                "?",
                font=title_font,
                fill=(120, 120, 130),
                anchor="mm",
            )
        else:
            sheet.paste(
                picture, (left + (tile - picture.width) // 2, top + (tile - picture.height) // 2)
            )
        caption = ellipsize(item.caption, tile - 4, caption_font.getlength)
        draw.text(
            (left + tile / 2, top + tile + layout.caption_height / 2),
            caption,
            font=caption_font,
            fill=TEXT_COLOUR,
            anchor="mm",
        )
    return encode_jpeg(sheet, max_bytes=max_bytes, qualities=(90, 85, 80, 70))


async def character_sheet(
    tiles: Sequence[SheetTile],
    title: str,
    dest: Path,
    *,
    tile: int = 320,
    columns: int | None = None,
    max_bytes: int = TELEGRAM_PHOTO_MAX_BYTES,
) -> Path:
    """Write the character card's contact sheet (JPEG, Telegram photo limits) to `dest`."""
    data = await asyncio.to_thread(
        render_sheet, tiles, title, tile=tile, columns=columns, max_bytes=max_bytes
    )
    await asyncio.to_thread(atomic_write, Path(dest), data)
    log.debug("character sheet", tiles=len(tiles), bytes=len(data))
    return Path(dest)

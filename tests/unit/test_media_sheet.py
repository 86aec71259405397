"""Character sheet: layout maths, caption fitting and a real render."""

from pathlib import Path

import pytest
from PIL import Image

from core.errors import InvalidInput
from core.media.sheet import (
    TILE_BACKGROUND,
    SheetTile,
    character_sheet,
    ellipsize,
    sheet_geometry,
    sheet_layout,
)


def test_layout_near_square_grid() -> None:
    layout = sheet_layout(5, tile=100, caption_height=20, title_height=40, padding=10)
    assert (layout.columns, layout.rows) == (3, 2)
    assert layout.width == 10 + 3 * 110
    assert layout.height == 40 + 10 + 2 * (120 + 10)
    assert layout.boxes[0] == (10, 50)
    assert layout.boxes[3] == (10, 50 + 130)
    assert layout.boxes[4] == (120, 180)


def test_layout_explicit_columns_and_errors() -> None:
    assert sheet_layout(3, columns=10).columns == 3
    assert sheet_layout(7, columns=2).rows == 4
    with pytest.raises(ValueError):
        sheet_layout(0)


def test_ellipsize() -> None:
    def measure(text: str) -> float:
        return float(len(text))

    assert ellipsize("short", 10, measure) == "short"
    assert ellipsize("a  very\nlong caption", 10, measure) == "a very lo…"
    assert len(ellipsize("x" * 50, 10, measure)) == 10
    assert ellipsize("abc", 0, measure) == "…"


async def test_sheet_renders_tiles_captions_and_title(tmp_path: Path) -> None:
    colours = [(220, 40, 40), (40, 220, 40), (40, 40, 220), (220, 220, 40)]
    tiles = []
    for index, colour in enumerate(colours):
        size = (300, 150) if index % 2 else (120, 240)
        path = tmp_path / f"img{index}.png"
        Image.new("RGB", size, colour).save(path)
        tiles.append(SheetTile(path, f"Аня — pose {index} with a rather long caption"))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    tiles.append(SheetTile(broken, "missing"))

    dest = await character_sheet(tiles, "Аня 🌸 reference sheet", tmp_path / "sheet.jpg", tile=160)
    layout = sheet_geometry(5, tile=160)
    with Image.open(dest) as sheet:
        assert sheet.format == "JPEG"
        assert sheet.size == (layout.width, layout.height)
        rgb = sheet.convert("RGB")
    assert (layout.columns, layout.rows) == (3, 2)

    def brightest(box: tuple[int, int, int, int]) -> int:
        extrema = rgb.crop(box).convert("L").getextrema()
        assert isinstance(extrema[1], int)
        return extrema[1]

    # Title text is drawn in the title band; captions under each tile.
    assert brightest((0, 0, layout.width, layout.title_height)) > 200
    for left, top in layout.boxes:
        caption_box = (left, top + 160, left + 160, top + 160 + layout.caption_height)
        assert brightest(caption_box) > 200
    # Each tile's centre shows its picture's colour (contained, centred).
    for colour, (left, top) in zip(colours, layout.boxes, strict=False):
        pixel = rgb.getpixel((left + 80, top + 80))
        assert isinstance(pixel, tuple)
        assert all(abs(a - b) < 40 for a, b in zip(pixel, colour, strict=True))
    # The unreadable image became a placeholder tile, not a failure.
    left, top = layout.boxes[4]
    placeholder = rgb.getpixel((left + 5, top + 5))
    assert isinstance(placeholder, tuple)
    assert all(abs(a - b) < 12 for a, b in zip(placeholder, TILE_BACKGROUND, strict=True))


async def test_sheet_needs_tiles(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        await character_sheet([], "empty", tmp_path / "s.jpg")

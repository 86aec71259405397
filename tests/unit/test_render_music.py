"""The soundtrack credit of result captions (bot.render) and the music chooser's buttons."""

from __future__ import annotations

import html
import re

import pytest

from bot.handlers.music import NO_MUSIC, OWN, PICK, STOP, chooser_markup, result_label
from bot.keyboards import decode
from bot.render import (
    CAPTION_LIMIT,
    CaptionInfo,
    SoundtrackCredit,
    caption,
    soundtrack_credit,
    visible_len,
)
from core.models import JobKind
from core.music.service import SoundtrackChoice

OWNER = 9_007_199_254_740_991  # the largest owner id the codec takes: the longest data
STORE = "https://music.apple.com/us/album/sakura/42?i=42&uo=4"
ITUNES = SoundtrackChoice(
    "itunes", "42", "Sakura Song", "Hana", STORE, "https://audio.example/p.m4a"
)
LOCAL = SoundtrackChoice("local", "ambient/Ocean Waves.mp3", "Ocean Waves")
UPLOAD = SoundtrackChoice("upload", "ab12.ogg", "Voice message")


def plain(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]*>", "", text))


def video(scene: str, credit: SoundtrackCredit | None, **kw: object) -> CaptionInfo:
    return CaptionInfo(scene, seed=42, kind=JobKind.VIDEO, soundtrack=credit, **kw)  # type: ignore[arg-type]


# -- reading the stored soundtrack -----------------------------------------------------------------


def test_credit_of_each_source() -> None:
    assert soundtrack_credit(ITUNES.to_json()) == SoundtrackCredit("Sakura Song", "Hana", STORE)
    assert soundtrack_credit(LOCAL.to_json()) == SoundtrackCredit("Ocean Waves")
    assert soundtrack_credit(UPLOAD.to_json()) == SoundtrackCredit("Voice message")
    assert soundtrack_credit(None) is None


@pytest.mark.parametrize(
    "data",
    [{}, {"title": ""}, {"title": "  \n "}, {"title": 5}, {"source": "itunes"}, []],
)
def test_no_credit_without_a_title(data: object) -> None:
    assert soundtrack_credit(data) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        'https://x.example/"><b>',
        "https://x.example/a b",
        "ftp://x.example/a",
        "https://x.example/" + "a" * 600,
        42,
    ],
)
def test_a_doubtful_store_link_is_dropped(url: object) -> None:
    credit = soundtrack_credit({"title": "Song", "artist": "Band", "store_url": url})
    assert credit == SoundtrackCredit("Song", "Band", None)


def test_titles_become_one_clean_line() -> None:
    credit = soundtrack_credit({"title": "Song\n\u202eevil\x00 name", "artist": " \t"})
    assert credit == SoundtrackCredit("Song evil name")


# -- the caption -----------------------------------------------------------------------------------


def test_itunes_credit_with_the_store_link() -> None:
    text = caption(video("petals falling", soundtrack_credit(ITUNES.to_json())), "en")
    assert plain(text).splitlines() == [
        "petals falling",
        "🎲 seed 42",
        "♪ Sakura Song — Hana",
        "Listen on Apple Music",
    ]
    assert f'<a href="{html.escape(STORE)}">Listen on Apple Music</a>' in text
    russian = plain(caption(video("x", soundtrack_credit(ITUNES.to_json())), "ru"))
    assert "Слушать в Apple Music" in russian


def test_local_and_uploaded_credits_have_no_link() -> None:
    for choice in (LOCAL, UPLOAD):
        text = caption(video("waves", soundtrack_credit(choice.to_json())), "en")
        assert plain(text).splitlines()[-1] == f"♪ {choice.title}"
        assert "href" not in text


def test_credit_is_escaped_and_bounded() -> None:
    credit = SoundtrackCredit("<b>" + "T" * 300, "A & B" * 50, STORE)
    text = caption(video("x", credit), "en")
    line = plain(text).splitlines()[2]
    assert line.startswith("♪ <b>TTT") and "…" in line
    assert "&lt;b&gt;" in text and "A &amp; B" in text
    assert visible_len(text) < 300


def test_rtl_credit_is_isolated() -> None:
    text = caption(video("x", SoundtrackCredit("أغنية", "فرقة")), "en")
    assert "♪ \u2068أغنية\u2069 — \u2068فرقة\u2069" in text


@pytest.mark.parametrize(
    "scene",
    ["a" * 3000, "word " * 700, "🌸👩‍👩‍👧 " * 600, "<&>" * 1000, "فتاة تقرأ في مقهى ممطر " * 80],
)
def test_the_credit_survives_trimming(scene: str) -> None:
    credit = SoundtrackCredit("Sakura Song " * 10, "Hana " * 20, STORE)
    link = "https://media.example.org/web/index.html#!/details?id=" + "f" * 32
    info = video(scene, credit, characters=["Aiko", "Ren"], link=link)
    text = caption(info, "en")
    assert visible_len(text) <= CAPTION_LIMIT
    assert visible_len(text) >= CAPTION_LIMIT - 40  # the scene was trimmed, not dropped
    lines = plain(text).splitlines()
    assert "…" in lines[0]
    assert lines[-4] == "🎲 seed 42"
    assert lines[-3].startswith("♪ Sakura Song")
    assert lines[-2] == "Listen on Apple Music"
    assert lines[-1] == "📚 Open in the library"
    assert STORE.replace("&", "&amp;") in text and link in text


def test_pathological_caption_keeps_the_credit() -> None:
    names = [f"Character{i:02d}" + "x" * 50 for i in range(40)]
    credit = SoundtrackCredit("Song", "Band", STORE)
    text = caption(video("scene " * 400, credit, characters=names), "ru")
    assert visible_len(text) <= CAPTION_LIMIT
    assert "♪ Song — Band" in plain(text) and "Слушать в Apple Music" in plain(text)


@pytest.mark.parametrize(
    ("reason", "english", "russian"),
    [
        ("gone", "the music file is no longer available", "файла с музыкой больше нет"),
        ("source_off", "that music source has been turned off", "этот источник музыки отключён"),
        (
            "download_failed",
            "the song preview could not be downloaded",
            "не удалось скачать отрывок песни",
        ),
        (
            "unusable",
            "the music file has no sound I can use",
            "в файле с музыкой нет звука, который я могу использовать",
        ),
        ("unknown", "the music could not be added", "музыку не удалось добавить"),
        ("<b>whatever</b>", "the music could not be added", "музыку не удалось добавить"),
    ],
)
def test_a_video_sent_without_its_soundtrack_says_why_in_place_of_the_credit(
    reason: str, english: str, russian: str
) -> None:
    credit = soundtrack_credit(ITUNES.to_json())
    text = caption(video("petals falling", credit, no_music=reason), "en")
    assert plain(text).splitlines() == [
        "petals falling",
        "🎲 seed 42",
        f"🔇 Sent without music: {english}.",
    ]
    assert "Sakura" not in text and "href" not in text
    assert plain(caption(video("x", credit, no_music=reason), "ru")).splitlines()[-1] == (
        f"🔇 Отправлено без музыки: {russian}."
    )


def test_the_no_music_note_survives_trimming() -> None:
    link = "https://media.example.org/web/index.html#!/details?id=" + "f" * 32
    info = video("word " * 700, SoundtrackCredit("Song"), no_music="gone", link=link)
    text = caption(info, "en")
    assert visible_len(text) <= CAPTION_LIMIT
    lines = plain(text).splitlines()
    assert lines[-2] == "🔇 Sent without music: the music file is no longer available."
    assert lines[-1] == "📚 Open in the library"


# -- the chooser -----------------------------------------------------------------------------------


def test_chooser_buttons_and_their_data() -> None:
    long = SoundtrackChoice("itunes", "1", "A" * 200, "B" * 200, STORE)
    choices = [ITUNES, LOCAL, long, *[LOCAL] * 5]
    markup = chooser_markup(choices, OWNER, "en")
    rows = [[(b.text, b.callback_data) for b in row] for row in markup.inline_keyboard]
    labels = [[label for label, _ in row] for row in rows]
    assert labels[0] == ["🎵 Sakura Song — Hana · iTunes"]
    assert labels[1] == ["📁 Ocean Waves · local"]
    assert len(labels[2][0]) < 90 and "…" in labels[2][0]
    assert len(rows) == 6 + 2  # six results at most, then the fallback rows
    assert labels[-2:] == [["🎤 Send my own audio"], ["🔇 No music", "Cancel"]]
    actions = []
    for row in rows:
        for _label, data in row:
            assert isinstance(data, str) and len(data.encode()) <= 64
            callback = decode(data)
            assert callback is not None and callback.owner == OWNER
            actions.append(callback.action)
    assert actions == [PICK] * 6 + [OWN, NO_MUSIC, STOP]
    picks = [decode(str(row[0][1])) for row in rows[:6]]
    assert [p.int(0) for p in picks if p is not None] == list(range(6))
    assert decode(PICK.data(5, owner=1)) is not None
    assert decode("v1|mu_pick|1|6") is None  # past the shown results


def test_chooser_without_results_and_labels_in_russian() -> None:
    markup = chooser_markup([], 7, "ru", own=False)
    assert [[b.text for b in row] for row in markup.inline_keyboard] == [
        ["🔇 Без музыки", "Отмена"]
    ]
    assert result_label(LOCAL, "ru") == "📁 Ocean Waves · локально"
    assert result_label(ITUNES, "ru") == "🎵 Sakura Song — Hana · iTunes"

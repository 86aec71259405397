"""bot.render: progress texts, the state reducer, captions within Telegram's limits, keyboards."""

from __future__ import annotations

import html
import re
import uuid

import pytest

from bot.keyboards import decode
from bot.render import (
    ANIMATE,
    CANCEL,
    CAPTION_LIMIT,
    ORIGINAL,
    REFERENCE,
    REROLL,
    UPSCALE,
    VARIATIONS,
    CaptionInfo,
    JobProgress,
    Phase,
    apply_event,
    cancel_requested,
    caption,
    clamp_percent,
    clusters,
    format_eta,
    isolate,
    picker_markup,
    progress_bar,
    progress_markup,
    progress_text,
    reference_markup,
    result_markup,
    trim_text,
    utf16_len,
    visible_len,
)
from core.events import JobEvent
from core.models import JobKind, Operation

JOB = uuid.UUID("12345678-1234-5678-1234-567812345678")
OWNER = 9_007_199_254_740_991  # the largest owner id the codec takes: the longest data


def event(type_: str, status: str = "running", **kw: object) -> JobEvent:
    return JobEvent(job_id=JOB, type=type_, status=status, chat_id=1, **kw)  # type: ignore[arg-type]


def plain(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]*>", "", text))


# -- measuring and trimming ------------------------------------------------------------------------


def test_utf16_len_counts_astral_characters_twice() -> None:
    assert utf16_len("abc") == 3
    assert utf16_len("😀") == 2
    assert utf16_len("👩‍👩‍👧") == 8  # three people joined by two ZWJs


def test_visible_len_ignores_tags_and_decodes_entities() -> None:
    assert visible_len("<b>a&amp;b</b> <a href='http://x/very/long'>go</a>") == len("a&b go")


def test_clusters_keep_emoji_sequences_and_combining_marks_whole() -> None:
    text = "e\u0301👍🏽👩‍👩‍👧🇯🇵1️⃣x"
    assert clusters(text) == ["e\u0301", "👍🏽", "👩‍👩‍👧", "🇯🇵", "1️⃣", "x"]
    assert "".join(clusters(text)) == text


def test_trim_text_keeps_short_text() -> None:
    assert trim_text("  a short scene ", 50) == "a short scene"


def test_trim_text_cuts_at_a_word_boundary_with_an_ellipsis() -> None:
    out = trim_text("the quick brown fox jumps over the lazy dog", 20)
    assert out == "the quick brown fox…"
    assert utf16_len(out) <= 20


def test_trim_text_cuts_a_long_word_hard() -> None:
    out = trim_text("a" * 100, 10)
    assert out == "a" * 9 + "…"


@pytest.mark.parametrize("limit", range(1, 40))
def test_trim_text_never_splits_an_emoji(limit: int) -> None:
    text = "🌸👩‍👩‍👧🇯🇵" * 10
    out = trim_text(text, limit)
    assert utf16_len(out) <= limit
    body = out.removesuffix("…")
    assert text.startswith(body)
    assert "".join(clusters(body)) == body
    assert not body.endswith("\u200d")
    assert len(clusters(body)) % 3 == 0 or body.endswith(("🌸", "👩‍👩‍👧", "🇯🇵"))


def test_trim_text_with_no_room_is_empty() -> None:
    assert trim_text("hello", 1) == ""
    assert trim_text("hello", 0) == ""


def test_isolate_only_wraps_right_to_left_text() -> None:
    assert isolate("Aiko") == "Aiko"
    assert isolate("שלום") == "\u2068שלום\u2069"
    assert isolate("مرحبا Aiko") == "\u2068مرحبا Aiko\u2069"


# -- ETA and bar -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "en", "ru"),
    [
        (0, "~5 s", "~5 с"),
        (12, "~15 s", "~15 с"),
        (55, "~55 s", "~55 с"),
        (59.5, "~1 min", "~1 мин"),
        (61, "~2 min", "~2 мин"),
        (3599, "~1 h", "~1 ч"),
        (float("inf"), "~5 s", "~5 с"),
        (3600 + 5 * 60, "~1 h 5 min", "~1 ч 5 мин"),
        (-3, "~5 s", "~5 с"),
    ],
)
def test_format_eta(seconds: float, en: str, ru: str) -> None:
    assert format_eta(seconds, "en") == en
    assert format_eta(seconds, "ru") == ru


@pytest.mark.parametrize(
    ("percent", "bar"),
    [
        (None, "▱" * 12),
        (0, "▱" * 12),
        (8.4, "▰" + "▱" * 11),
        (50, "▰" * 6 + "▱" * 6),
        (99.9, "▰" * 11 + "▱"),
        (100, "▰" * 12),
        (250, "▰" * 12),
        (-5, "▱" * 12),
        (float("nan"), "▱" * 12),
    ],
)
def test_progress_bar(percent: float | None, bar: str) -> None:
    assert progress_bar(percent) == bar


def test_clamp_percent_never_shows_100_while_running() -> None:
    assert clamp_percent(99.99) == 99
    assert clamp_percent(47.6) == 47
    assert clamp_percent(None) == 0
    assert clamp_percent(float("inf")) == 0


# -- the reducer -----------------------------------------------------------------------------------


def start() -> JobProgress:
    return JobProgress(kind=JobKind.IMAGE, scene="Aiko at the beach", position=3, eta_s=60)


def test_queue_event_updates_position_and_eta() -> None:
    state = apply_event(start(), event("queue", "queued", position=1, eta_s=20.0))
    assert (state.phase, state.position, state.eta_s) == (Phase.QUEUED, 1, 20.0)


def test_progress_event_moves_to_running_with_steps() -> None:
    state = apply_event(
        start(), event("progress", percent=40.0, node="3", step=12, steps=30, eta_s=9.0)
    )
    assert state.phase is Phase.RUNNING
    assert (state.step, state.steps, state.percent, state.position) == (12, 30, 40.0, None)


def test_states_move_forward_only() -> None:
    state = apply_event(start(), event("state", "postprocessing"))
    assert state.phase is Phase.POSTPROCESSING
    late = apply_event(state, event("progress", percent=90.0, step=29, steps=30))
    assert late == state
    assert apply_event(state, event("state", "running")) == state
    assert apply_event(state, event("state", "delivering")).phase is Phase.UPLOADING


def test_requeue_after_a_lost_gpu_shows_waiting() -> None:
    running = apply_event(start(), event("progress", percent=50.0, step=5, steps=10))
    state = apply_event(running, event("state", "queued", message="waiting for a GPU server"))
    assert state.phase is Phase.QUEUED and state.waiting_gpu and state.percent is None
    assert "Waiting for a free GPU server" in progress_text(state, "en")


def test_queue_without_any_gpu_server_says_so_and_promises_no_eta() -> None:
    down = event("queue", "queued", position=2, eta_s=None, message="waiting for a GPU server")
    state = apply_event(start(), down)
    text = progress_text(state, "en")
    assert "Waiting for a free GPU server" in text and "#2 in line" in text
    back = apply_event(state, event("queue", "queued", position=1, eta_s=20.0))
    assert not back.waiting_gpu
    assert "Waiting for a free GPU server" not in progress_text(back, "en")


def test_final_states_stick() -> None:
    failed = apply_event(start(), event("state", "failed", message="Out of memory."))
    assert failed.phase is Phase.FAILED and failed.reason == "Out of memory."
    for later in (event("state", "running"), event("progress", percent=10.0), event("delivered")):
        assert apply_event(failed, later) == failed


def test_delivered_is_done() -> None:
    assert apply_event(start(), event("delivered", "done")).phase is Phase.DONE


def test_unknown_event_types_change_nothing() -> None:
    assert apply_event(start(), event("library", "done", link="http://x")) == start()


def test_cancel_requested_keeps_cancelling_until_final() -> None:
    state = cancel_requested(apply_event(start(), event("state", "running")))
    assert state.phase is Phase.CANCELLING
    state = apply_event(state, event("progress", percent=60.0, step=6, steps=10))
    assert state.phase is Phase.CANCELLING
    assert apply_event(state, event("state", "cancelled")).phase is Phase.CANCELLED
    done = apply_event(start(), event("delivered", "done"))
    assert cancel_requested(done) == done


# -- progress texts --------------------------------------------------------------------------------


def test_queued_text_shows_position_and_eta() -> None:
    text = progress_text(start(), "en")
    assert plain(text).splitlines() == [
        "⏳ Image · waiting in line",
        "Aiko at the beach",
        "#3 in line · ready in ~1 min",
    ]


def test_running_text_shows_bar_percent_step_and_eta() -> None:
    state = apply_event(
        start(), event("progress", percent=47.9, node="3", step=14, steps=30, eta_s=12.0)
    )
    lines = plain(progress_text(state, "en")).splitlines()
    assert lines[0] == "🎨 Image · generating"
    assert lines[2] == "▰▰▰▰▰▱▱▱▱▱▱▱ 47%"
    assert lines[3] == "step 14/30 · ~15 s left"


def test_running_text_without_steps_names_the_node() -> None:
    state = apply_event(start(), event("progress", percent=5.0, node="VAEDecode"))
    assert "node VAEDecode" in progress_text(state, "en")


@pytest.mark.parametrize(
    ("status", "first"),
    [
        ("submitted", "🚀 Image · starting on a GPU…"),
        ("postprocessing", "⚙️ Image · finishing (post-processing)…"),
        ("delivering", "📤 Image · uploading…"),
        ("cancelled", "🚫 Image · cancelled"),
    ],
)
def test_phase_headers(status: str, first: str) -> None:
    state = apply_event(start(), event("state", status))
    assert plain(progress_text(state, "en")).splitlines()[0] == first


def test_failed_text_gives_the_reason_escaped_and_bounded() -> None:
    state = apply_event(start(), event("state", "failed", message="<oops> " + "x" * 1000))
    text = progress_text(state, "en")
    assert "&lt;oops&gt;" in text
    assert plain(text).splitlines()[-1].endswith("…")
    assert visible_len(text) <= CAPTION_LIMIT


def test_operation_names_the_progress() -> None:
    state = JobProgress(kind=JobKind.VIDEO, operation=Operation.ANIMATE)
    assert plain(progress_text(state, "en")).startswith("⏳ Animation")
    assert plain(progress_text(state, "ru")).startswith("⏳ Анимация · в очереди")


def test_progress_text_escapes_and_trims_the_scene() -> None:
    state = JobProgress(kind=JobKind.IMAGE, scene="<b>bold</b> " + "word " * 200)
    text = progress_text(state, "en")
    assert "&lt;b&gt;bold" in text
    assert visible_len(text) < 400


def test_progress_text_isolates_rtl_scene() -> None:
    state = JobProgress(kind=JobKind.IMAGE, scene="فتاة على الشاطئ")
    assert "\u2068فتاة على الشاطئ\u2069" in progress_text(state, "en")


# -- captions --------------------------------------------------------------------------------------


def test_caption_lists_scene_characters_seed_and_link() -> None:
    info = CaptionInfo("Aiko & Ren at a festival", ["Aiko", "Ren"], 42, "https://jf/x?id=1&a=2")
    text = caption(info, "en")
    assert plain(text).splitlines() == [
        "Aiko & Ren at a festival",
        "👤 Aiko, Ren",
        "🎲 seed 42",
        "📚 Open in the library",
    ]
    assert 'href="https://jf/x?id=1&amp;a=2"' in text


def test_caption_names_the_operation() -> None:
    text = caption(CaptionInfo("x", seed=7, operation=Operation.UPSCALE), "en")
    assert "🎲 seed 7 · Upscale" in plain(text)
    assert "Upscale" in plain(caption(CaptionInfo("x", operation=Operation.UPSCALE), "en"))


@pytest.mark.parametrize(
    "scene",
    [
        "a" * 3000,
        "word " * 700,
        "🌸👩‍👩‍👧 " * 600,  # emoji count twice in UTF-16
        "<&>" * 1000,  # escaping must not count
        "فتاة تقرأ في مقهى ممطر " * 80,  # right to left
        "e\u0301" * 1500,
    ],
)
def test_caption_stays_within_1024_with_the_link_and_seed_kept(scene: str) -> None:
    link = "https://media.example.org/web/index.html#!/details?id=" + "f" * 32
    names = ["Aiko", "Ren", "Sakura"]
    text = caption(CaptionInfo(scene, names, 4_294_967_295, link), "en")
    assert visible_len(text) <= CAPTION_LIMIT
    assert visible_len(text) >= CAPTION_LIMIT - 40  # used, not wasted
    lines = plain(text).splitlines()
    assert lines[-1] == "📚 Open in the library"
    assert lines[-2] == "🎲 seed 4294967295"
    assert "…" in lines[0]
    assert link in text


def test_caption_trims_many_long_character_names() -> None:
    names = [f"Character{i:02d}" + "x" * 50 for i in range(40)]
    text = caption(CaptionInfo("scene", names, 1), "ru")
    assert visible_len(text) <= CAPTION_LIMIT
    assert "сид" in text


def test_caption_of_an_rtl_scene_is_isolated() -> None:
    text = caption(CaptionInfo("שלום עולם", ["Aiko"], 5), "en")
    assert "\u2068שלום עולם\u2069" in text


# -- keyboards -------------------------------------------------------------------------------------


def all_data(markup: object) -> list[str]:
    rows = markup.inline_keyboard  # type: ignore[attr-defined]
    return [b.callback_data for row in rows for b in row]


def test_result_buttons_of_an_image() -> None:
    markup = result_markup(JOB, OWNER, JobKind.IMAGE, "en")
    labels = [b.text for row in markup.inline_keyboard for b in row]
    assert labels == [
        "🔁 Reroll",
        "🎲 Variations",
        "🔍 Upscale",
        "🎬 Animate",
        "📌 Use as reference",
        "📄 Original",
    ]
    actions = [decode(d) for d in all_data(markup)]
    assert [a.action for a in actions if a] == [
        REROLL,
        VARIATIONS,
        UPSCALE,
        ANIMATE,
        REFERENCE,
        ORIGINAL,
    ]
    for data in all_data(markup):
        assert len(data.encode()) <= 64
        decoded = decode(data)
        assert decoded is not None and decoded.owner == OWNER and decoded.uuid(0) == JOB


def test_result_buttons_of_a_video() -> None:
    markup = result_markup(JOB, OWNER, JobKind.VIDEO, "ru", has_original=False)
    labels = [b.text for row in markup.inline_keyboard for b in row]
    assert labels == ["🔁 Ещё раз", "🎲 Вариации"]


def test_cancel_button_only_while_cancellable() -> None:
    markup = progress_markup(start(), JOB, OWNER, "en")
    assert markup is not None
    (data,) = all_data(markup)
    decoded = decode(data)
    assert decoded is not None and decoded.action is CANCEL and decoded.uuid(0) == JOB
    for status in ("delivering", "done", "failed", "cancelled"):
        ended = apply_event(start(), event("state", status))
        assert progress_markup(ended, JOB, OWNER, "en") is None
    assert progress_markup(cancel_requested(start()), JOB, OWNER, "en") is None


def test_picker_and_reference_keyboards_fit_64_bytes() -> None:
    chars = [(uuid.uuid4(), f"Name {i} " + "ж" * 60) for i in range(30)]
    picker = picker_markup(chars, {chars[0][0]}, OWNER, "en")
    texts = [b.text for row in picker.inline_keyboard for b in row]
    assert texts[0].startswith("✅ ") and texts[1].startswith("▫️ ")
    assert texts[-2:] == ["Done", "Cancel"]
    nobody = picker_markup(chars, set(), OWNER, "en")
    assert nobody.inline_keyboard[-1][0].text == "Nobody, just the scene"
    ref = reference_markup(JOB, OWNER, chars, "en")
    for markup in (picker, nobody, ref):
        for data in all_data(markup):
            assert 1 <= len(data.encode()) <= 64
            assert decode(data) is not None
    assert all(len(b.text) <= 41 for row in ref.inline_keyboard for b in row)

"""What scene messages look like (pure): progress texts, result captions, their buttons.

- `JobProgress` is what a progress message knows about its job; `apply_event` folds a core
  `JobEvent` into it (never backwards, final states stick) and `progress_text` renders it:
  queued (position, ETA) -> starting -> running (step x/y, a text progress bar, percent, ETA)
  -> post-processing -> uploading -> done / failed (with the reason) / cancelled.
- `caption` renders a result caption (scene, characters, seed, soundtrack credit, library link)
  within Telegram's 1024 characters (UTF-16 code units, after HTML parsing) by trimming the
  scene at a word boundary, never inside an emoji or a combining sequence; right-to-left text
  is isolated. The soundtrack credit (``♪ Title — Artist`` and the store link of an iTunes
  preview, from `soundtrack_credit(job.soundtrack)`) is never trimmed away; neither is the note
  that replaces it when a video is sent without its soundtrack (`CaptionInfo.no_music`).
- The callback actions of scene and result buttons, and their keyboards (`bot.keyboards`' codec).

Everything here is HTML for parse_mode="HTML"; user text is escaped by `bot.texts.t`.
"""

from __future__ import annotations

import functools
import html
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, get_args
from uuid import UUID

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.keyboards import UUID_ARG, action, button, rows
from bot.texts import core_text, t, t_plain
from core.events import JobEvent
from core.models import JobKind, Operation
from core.music.service import MissingReason

CAPTION_LIMIT = 1024  # Telegram: caption length after entity parsing, UTF-16 code units
TEXT_LIMIT = 4096
BAR_WIDTH = 12
PROGRESS_SCENE_LIMIT = 160  # the scene excerpt shown on a progress message
REASON_LIMIT = 300
NAMES_LIMIT = 200
CREDIT_TITLE_LIMIT = 80
CREDIT_ARTIST_LIMIT = 60
STORE_URL_LIMIT = 500
ELLIPSIS = "…"
_TAG = re.compile(r"<[^>]*>")
_STORE_URL = re.compile(r"^https?://[^\s<>\"'\\]+$")
_CONTROLS = re.compile("[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
_FSI, _PDI = "\u2068", "\u2069"

# -- callback actions (bot.keyboards codec; every one is owned by the requester) ---------------

CANCEL = action("sc_cancel", UUID_ARG)  # job id
REROLL = action("rs_reroll", UUID_ARG)  # job id
VARIATIONS = action("rs_var", UUID_ARG)
UPSCALE = action("rs_up", UUID_ARG)
ANIMATE = action("rs_anim", UUID_ARG)
REFERENCE = action("rs_ref", UUID_ARG)  # job id: shows the character choice on the result
REFERENCE_TO = action("rs_refto", UUID_ARG)  # character id (the job is the message's)
REFERENCE_BACK = action("rs_back", UUID_ARG)  # job id: back to the result buttons
ORIGINAL = action("rs_orig", UUID_ARG)  # job id
PICK_TOGGLE = action("sc_tog", UUID_ARG)  # character id (the draft is the message's)
PICK_DONE = action("sc_go")
PICK_STOP = action("sc_stop")


# -- text measuring and trimming ------------------------------------------------------------------


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


def visible_len(html_text: str) -> int:
    """Length of an HTML message once Telegram parsed it (tags removed, entities decoded)."""
    return utf16_len(html.unescape(_TAG.sub("", html_text)).strip())


def _extends(char: str) -> bool:
    """A character that belongs to the cluster before it."""
    cp = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Me", "Mc")
        or cp in (0x200D, 0xFE0E, 0xFE0F, 0x20E3)
        or 0x1F3FB <= cp <= 0x1F3FF  # skin tones
        or 0xE0020 <= cp <= 0xE007F  # emoji tag sequences (subdivision flags)
    )


def _regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def clusters(text: str) -> list[str]:
    """Approximate user-perceived characters: base + combining marks, emoji ZWJ sequences,
    skin tones, keycaps, flag pairs. Good enough never to cut one in half."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        if _regional(text[i]) and j < n and _regional(text[j]):
            j += 1
        while j < n and (_extends(text[j]) or text[j - 1] == "\u200d"):
            j += 1
        out.append(text[i:j])
        i = j
    return out


def trim_text(text: str, limit: int) -> str:
    """`text` within `limit` UTF-16 units: cut between clusters, at a word boundary when one is
    near the end, with an ellipsis. Text that fits is returned unchanged."""
    text = text.strip()
    if utf16_len(text) <= limit:
        return text
    if limit <= len(ELLIPSIS):
        return ""
    budget = limit - utf16_len(ELLIPSIS)
    kept: list[str] = []
    used = 0
    at_boundary = False
    for cluster in clusters(text):
        size = utf16_len(cluster)
        if used + size > budget:
            at_boundary = cluster.isspace()
            break
        kept.append(cluster)
        used += size
    cut = "".join(kept)
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if not at_boundary and space > 0 and space >= len(cut) * 3 // 4:
        cut = cut[:space]
    cut = cut.rstrip(" \n\t,;:-–—")
    return cut + ELLIPSIS if cut else ""


_RTL = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufeff]")


def isolate(text: str) -> str:
    """Wrap right-to-left text in a first-strong isolate so it cannot reorder what follows."""
    return f"{_FSI}{text}{_PDI}" if _RTL.search(text) else text


# -- ETA and progress bar --------------------------------------------------------------------------


def format_eta(seconds: float, lang: str) -> str:
    """~5 s, ~3 min, ~1 h 5 min (rounded up: a promise rather kept early)."""
    seconds = max(0.0, seconds) if math.isfinite(seconds) else 0.0
    if seconds <= 55:
        return t_plain("scenes.eta_seconds", lang, n=max(5, math.ceil(seconds / 5) * 5))
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return t_plain("scenes.eta_minutes", lang, n=minutes)
    if minutes % 60 == 0:
        return t_plain("scenes.eta_hours_even", lang, h=minutes // 60)
    return t_plain("scenes.eta_hours", lang, h=minutes // 60, m=minutes % 60)


def clamp_percent(percent: float | None) -> int:
    """A whole percent 0..99 while running (100 only once done)."""
    if percent is None or not math.isfinite(percent):
        return 0
    return max(0, min(99, math.floor(percent)))


def progress_bar(percent: float | None, width: int = BAR_WIDTH) -> str:
    """`▰▰▰▱▱▱` with `width` cells; full only at 100%."""
    if percent is None or not math.isfinite(percent):
        percent = 0.0
    value = max(0.0, min(100.0, percent))
    filled = math.floor(value / 100 * width)
    if value < 100:
        filled = min(filled, width - 1)
    return "▰" * filled + "▱" * (width - filled)


# -- progress state ------------------------------------------------------------------------------


class Phase(StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    POSTPROCESSING = "postprocessing"
    UPLOADING = "uploading"
    CANCELLING = "cancelling"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (Phase.DONE, Phase.FAILED, Phase.CANCELLED)

    @property
    def cancellable(self) -> bool:
        return self in (Phase.QUEUED, Phase.STARTING, Phase.RUNNING, Phase.POSTPROCESSING)


_ORDER = {
    Phase.QUEUED: 0,
    Phase.STARTING: 1,
    Phase.RUNNING: 2,
    Phase.POSTPROCESSING: 3,
    Phase.UPLOADING: 4,
}
_STATUS_PHASE = {
    "queued": Phase.QUEUED,
    "submitted": Phase.STARTING,
    "running": Phase.RUNNING,
    "postprocessing": Phase.POSTPROCESSING,
    "delivering": Phase.UPLOADING,
    "done": Phase.DONE,
    "failed": Phase.FAILED,
    "cancelled": Phase.CANCELLED,
}


def phase_of_status(status: str) -> Phase:
    return _STATUS_PHASE.get(status, Phase.QUEUED)


@dataclass(frozen=True)
class JobProgress:
    """What a progress message shows about its job."""

    kind: JobKind
    operation: Operation = Operation.GENERATE
    phase: Phase = Phase.QUEUED
    scene: str = ""
    position: int | None = None
    eta_s: float | None = None
    node: str | None = None
    step: int | None = None
    steps: int | None = None
    percent: float | None = None
    reason: str | None = None
    waiting_gpu: bool = False  # queued again after its GPU server went away
    cancel_requested: bool = False


def apply_event(state: JobProgress, event: JobEvent) -> JobProgress:
    """The state after `event`. Final states never change; intermediate phases only move
    forward, except back to queued (the job lost its GPU server and waits again)."""
    if state.phase.final:
        return state
    if event.type == "delivered":
        return replace(state, phase=Phase.DONE, percent=100.0)
    if event.type == "queue":
        if state.phase is not Phase.QUEUED:
            return state
        return replace(
            state, position=event.position, eta_s=event.eta_s, waiting_gpu=bool(event.message)
        )
    if event.type == "progress":
        if _ORDER.get(state.phase, 9) > _ORDER[Phase.RUNNING]:
            return state
        return replace(
            state,
            phase=Phase.CANCELLING if state.cancel_requested else Phase.RUNNING,
            percent=event.percent if event.percent is not None else state.percent,
            node=event.node,
            step=event.step,
            steps=event.steps,
            eta_s=event.eta_s,
            position=None,
        )
    if event.type != "state":
        return state
    phase = phase_of_status(event.status)
    if phase.final:
        reason = event.message if phase is Phase.FAILED else None
        return replace(state, phase=phase, reason=reason, eta_s=None)
    if phase is Phase.QUEUED:
        if state.phase is Phase.QUEUED and not event.message:
            return state
        return replace(
            state,
            phase=Phase.QUEUED,
            position=None,
            eta_s=None,
            percent=None,
            node=None,
            step=None,
            steps=None,
            waiting_gpu=bool(event.message) or state.waiting_gpu,
        )
    current = _ORDER.get(state.phase, _ORDER[Phase.RUNNING])
    if _ORDER[phase] < current:
        return state
    if state.cancel_requested and phase is not Phase.UPLOADING:
        return replace(state, phase=Phase.CANCELLING)
    percent = state.percent
    if phase is Phase.RUNNING and event.percent is not None:
        percent = max(percent or 0.0, event.percent)
    return replace(state, phase=phase, percent=percent, position=None)


def cancel_requested(state: JobProgress) -> JobProgress:
    """The requester pressed Cancel on a job that is already running."""
    if not state.phase.cancellable:
        return state
    return replace(state, phase=Phase.CANCELLING, cancel_requested=True)


def _what(state: JobProgress, lang: str) -> str:
    if state.operation is Operation.GENERATE:
        return t_plain(f"scenes.kind_{state.kind.value}", lang)
    return t_plain(f"scenes.op_{state.operation.value}", lang)


def _detail(state: JobProgress, lang: str) -> str | None:
    parts: list[str] = []
    if state.steps and state.step is not None:
        parts.append(t("scenes.step", lang, step=state.step, steps=state.steps))
    elif state.node:
        parts.append(t("scenes.node", lang, node=state.node[:40]))
    if state.eta_s is not None:
        parts.append(t("scenes.eta_left", lang, eta=format_eta(state.eta_s, lang)))
    return " · ".join(parts) or None


def progress_text(state: JobProgress, lang: str) -> str:
    """The HTML text (or caption: it stays within 1024) of a progress message."""
    what = _what(state, lang)
    lines = [t(f"scenes.phase_{state.phase.value}", lang, what=what)]
    if state.scene:
        excerpt = trim_text(state.scene, PROGRESS_SCENE_LIMIT)
        lines.append(t("scenes.scene_line", lang, scene=isolate(excerpt)))
    if state.phase is Phase.QUEUED:
        if state.waiting_gpu:
            lines.append(t("scenes.waiting_gpu", lang))
        if state.waiting_gpu and state.position is not None:
            lines.append(t("scenes.position_no_eta", lang, position=state.position))
        elif state.position is not None and state.eta_s is not None:
            lines.append(
                t(
                    "scenes.position",
                    lang,
                    position=state.position,
                    eta=format_eta(state.eta_s, lang),
                )
            )
        elif state.position is not None:
            lines.append(t("scenes.position_no_eta", lang, position=state.position))
    elif state.phase in (Phase.RUNNING, Phase.CANCELLING):
        percent = clamp_percent(state.percent)
        lines.append(t("scenes.bar", lang, bar=progress_bar(percent), percent=percent))
        detail = _detail(state, lang)
        if detail and state.phase is Phase.RUNNING:
            lines.append(detail)
    elif state.phase is Phase.FAILED and state.reason:
        reason = core_text(state.reason, lang)  # core's stored reason, in English
        lines.append(t("scenes.reason", lang, reason=trim_text(reason, REASON_LIMIT)))
    return "\n".join(lines)


# -- result captions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoundtrackCredit:
    """Who made the music of a video: shown in its caption."""

    title: str
    artist: str | None = None
    store_url: str | None = None  # an iTunes preview's store page (http/https only)


def soundtrack_credit(data: Mapping[str, Any] | None) -> SoundtrackCredit | None:
    """The credit of a job's stored soundtrack (core's `SoundtrackChoice.to_json()`); None
    when the job has none or it is unreadable. A store link that is not a plain http(s) URL is
    dropped (Telegram would refuse the whole caption)."""
    if not isinstance(data, Mapping):
        return None
    title, artist = _one_line(data.get("title")), _one_line(data.get("artist"))
    if not title:
        return None
    url = data.get("store_url")
    if not (isinstance(url, str) and len(url) <= STORE_URL_LIMIT and _STORE_URL.match(url)):
        url = None
    return SoundtrackCredit(title, artist or None, url)


def _one_line(value: Any) -> str:
    """A stored title or artist as one clean line ("" when missing)."""
    if not isinstance(value, str):
        return ""
    return " ".join(_CONTROLS.sub(" ", value).split())


def credit_lines(credit: SoundtrackCredit, lang: str) -> list[str]:
    """``♪ Title — Artist`` (HTML) and, for a store track, the store link on its own line."""
    title = isolate(trim_text(credit.title, CREDIT_TITLE_LIMIT))
    artist = isolate(trim_text(credit.artist, CREDIT_ARTIST_LIMIT)) if credit.artist else ""
    if artist:
        lines = [t("music.credit", lang, title=title, artist=artist)]
    else:
        lines = [t("music.credit_title", lang, title=title)]
    if credit.store_url:
        lines.append(t("music.credit_store", lang, url=credit.store_url))
    return lines


@dataclass(frozen=True)
class CaptionInfo:
    scene: str
    characters: Sequence[str] = ()
    seed: int | None = None
    link: str | None = None
    kind: JobKind = JobKind.IMAGE
    operation: Operation = Operation.GENERATE
    soundtrack: SoundtrackCredit | None = None
    # The video is sent without its soundtrack, for this reason (core.music.service's
    # `MissingReason`; another gets a general why): a note replaces the credit.
    no_music: str | None = None


NO_MUSIC_REASONS = frozenset(get_args(MissingReason))


def no_music_note(reason: str, lang: str) -> str:
    """``🔇 Sent without music: <why>.`` (HTML); an unknown reason gets a general why."""
    key = f"scenes.no_music_{reason}" if reason in NO_MUSIC_REASONS else "scenes.no_music_unknown"
    return t("scenes.caption_no_music", lang, reason=t_plain(key, lang))


def _caption_lines(info: CaptionInfo, scene: str, names: str, lang: str) -> list[str]:
    lines: list[str] = []
    if scene:
        lines.append(t("scenes.caption_scene", lang, scene=isolate(scene)))
    if names:
        lines.append(t("scenes.caption_characters", lang, names=names))
    op = (
        None
        if info.operation is Operation.GENERATE
        else t_plain(f"scenes.op_{info.operation.value}", lang)
    )
    if info.seed is not None:
        if op:
            lines.append(t("scenes.caption_seed_op", lang, seed=info.seed, op=op))
        else:
            lines.append(t("scenes.caption_seed", lang, seed=info.seed))
    elif op:
        lines.append(t("scenes.caption_op", lang, op=op))
    if info.no_music is not None:
        lines.append(no_music_note(info.no_music, lang))
    elif info.soundtrack is not None:
        lines.extend(credit_lines(info.soundtrack, lang))
    if info.link:
        lines.append(t("scenes.caption_link", lang, url=info.link))
    return lines


def caption(info: CaptionInfo, lang: str, limit: int = CAPTION_LIMIT) -> str:
    """HTML caption of a result, at most `limit` visible UTF-16 units (the scene is trimmed;
    the seed, the soundtrack credit or note and the library link are always kept)."""
    names = trim_text(", ".join(isolate(n) for n in info.characters), NAMES_LIMIT)
    scene = info.scene.strip()
    text = "\n".join(_caption_lines(info, scene, names, lang))
    if visible_len(text) <= limit:
        return text
    without_scene = "\n".join(_caption_lines(info, "", names, lang))
    # The scene line adds its own text, a newline, and the isolate marks of RTL text.
    marks = 2 if _RTL.search(scene) else 0
    budget = limit - visible_len(without_scene) - 1 - marks
    scene = trim_text(scene, max(0, budget))
    text = "\n".join(_caption_lines(info, scene, names, lang))
    while visible_len(text) > limit and scene:  # defensive: formatting around the scene
        scene = trim_text(scene, utf16_len(scene) - 8)
        text = "\n".join(_caption_lines(info, scene, names, lang))
    if visible_len(text) > limit:  # pathological: keep the seed, the credit and the link
        text = "\n".join(_caption_lines(info, "", "", lang))
    return text


# -- keyboards ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def cancel_markup(job_id: UUID, owner: int, lang: str) -> InlineKeyboardMarkup:
    # Cached: rebuilt for every progress event otherwise (PTB objects are immutable).
    return InlineKeyboardMarkup(
        [[button(t_plain("scenes.btn_cancel", lang), CANCEL.data(job_id, owner=owner))]]
    )


def progress_markup(
    state: JobProgress, job_id: UUID, owner: int, lang: str
) -> InlineKeyboardMarkup | None:
    """A Cancel button while the job can still be cancelled."""
    if state.phase.cancellable and not state.cancel_requested:
        return cancel_markup(job_id, owner, lang)
    return None


def result_markup(
    job_id: UUID, owner: int, kind: JobKind, lang: str, *, has_original: bool = True
) -> InlineKeyboardMarkup:
    """Buttons under a result: Reroll, Variations, Upscale, Animate, Use as reference
    (images), Original."""

    def b(key: str, act_data: str) -> InlineKeyboardButton:
        return button(t_plain(key, lang), act_data)

    first = [
        b("scenes.btn_reroll", REROLL.data(job_id, owner=owner)),
        b("scenes.btn_variations", VARIATIONS.data(job_id, owner=owner)),
    ]
    keyboard = [first]
    if kind is JobKind.IMAGE:
        keyboard.append(
            [
                b("scenes.btn_upscale", UPSCALE.data(job_id, owner=owner)),
                b("scenes.btn_animate", ANIMATE.data(job_id, owner=owner)),
            ]
        )
        last = [b("scenes.btn_reference", REFERENCE.data(job_id, owner=owner))]
        if has_original:
            last.append(b("scenes.btn_original", ORIGINAL.data(job_id, owner=owner)))
        keyboard.append(last)
    elif has_original:
        keyboard.append([b("scenes.btn_original", ORIGINAL.data(job_id, owner=owner))])
    return InlineKeyboardMarkup(keyboard)


def reference_markup(
    job_id: UUID, owner: int, characters: Sequence[tuple[UUID, str]], lang: str
) -> InlineKeyboardMarkup:
    """Choose the character that gets the result as a reference (+ back)."""
    buttons = [
        button(trim_text(name, 40), REFERENCE_TO.data(cid, owner=owner))
        for cid, name in characters[:48]
    ]
    keyboard = rows(buttons, 2)
    keyboard.append(
        [button(t_plain("common.back", lang), REFERENCE_BACK.data(job_id, owner=owner))]
    )
    return InlineKeyboardMarkup(keyboard)


def picker_markup(
    characters: Sequence[tuple[UUID, str]], selected: set[UUID], owner: int, lang: str
) -> InlineKeyboardMarkup:
    """Multi-select of the characters of a scene: toggles, Done, Cancel."""
    buttons = [
        button(
            ("✅ " if cid in selected else "▫️ ") + trim_text(name, 40),
            PICK_TOGGLE.data(cid, owner=owner),
        )
        for cid, name in characters[:96]
    ]
    keyboard = rows(buttons, 2)
    done_key = "common.done" if selected else "scenes.pick_none"
    keyboard.append(
        [
            button(t_plain(done_key, lang), PICK_DONE.data(owner=owner)),
            button(t_plain("common.cancel", lang), PICK_STOP.data(owner=owner)),
        ]
    )
    return InlineKeyboardMarkup(keyboard)

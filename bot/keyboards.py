"""Inline keyboards and the callback-data codec.

Callback data is short, versioned and validated: ``v1|<action>|<owner>|<arg>|<arg>``.
Each action is declared once with `action(name, *arg_specs)`; the declaration is the schema:

    OPEN = action("ch_open", UUID_ARG)              # owned: the owner's user id is encoded
    data = OPEN.data(user_id, character.id)         # "v1|ch_open|42|<22 chars>"
    CallbackQueryHandler(on_open, pattern=OPEN.pattern)
    cb = decode(query.data)                         # Callback | None (forged/stale -> None)

`owned=True` actions (the default) carry the user id of whoever the buttons are for; handlers
check it with `bot.context.check_owner` so other users of a group get a toast. UUIDs are
encoded as 22 base64url characters. Anything that does not match its schema exactly decodes to
None: handlers answer a short toast and never raise.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from uuid import UUID

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.texts import t_plain

VERSION = "v1"
SEP = "|"
MAX_BYTES = 64
MAX_INT = 2**53
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,15}$")
_WORD = re.compile(r"^[A-Za-z0-9_.:+-]{1,32}$")
_INT = re.compile(r"^(0|[1-9][0-9]{0,15})$")
_B64 = re.compile(r"^[A-Za-z0-9_-]{22}$")

ArgValue = int | UUID | str


class ArgKind(StrEnum):
    INT = "int"
    UUID = "uuid"
    WORD = "word"


@dataclass(frozen=True)
class ArgSpec:
    kind: ArgKind
    choices: frozenset[str] | None = None  # WORD only: the allowed values
    max_int: int = MAX_INT  # INT only: inclusive upper bound


INT_ARG = ArgSpec(ArgKind.INT)
UUID_ARG = ArgSpec(ArgKind.UUID)
WORD_ARG = ArgSpec(ArgKind.WORD)


def word_arg(choices: Iterable[str]) -> ArgSpec:
    """A WORD argument restricted to `choices` (each must itself be a valid word)."""
    values = frozenset(choices)
    bad = [value for value in values if not _WORD.match(value)]
    if bad or not values:
        raise ValueError(f"invalid word choices: {bad or 'none'}")
    return ArgSpec(ArgKind.WORD, choices=values)


def int_arg(maximum: int) -> ArgSpec:
    return ArgSpec(ArgKind.INT, max_int=maximum)


def uuid_to_text(value: UUID) -> str:
    return base64.urlsafe_b64encode(value.bytes).decode("ascii").rstrip("=")


def uuid_from_text(text: str) -> UUID | None:
    if not _B64.match(text):
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "==")
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 16 or uuid_to_text(UUID(bytes=raw)) != text:
        return None
    return UUID(bytes=raw)


def _encode_arg(spec: ArgSpec, value: ArgValue) -> str:
    if spec.kind is ArgKind.INT:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= spec.max_int:
            raise ValueError(f"bad int argument {value!r}")
        return str(value)
    if spec.kind is ArgKind.UUID:
        if not isinstance(value, UUID):
            raise ValueError(f"bad uuid argument {value!r}")
        return uuid_to_text(value)
    if not isinstance(value, str) or not _WORD.match(value):
        raise ValueError(f"bad word argument {value!r}")
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"word {value!r} not in {sorted(spec.choices)}")
    return value


def _decode_arg(spec: ArgSpec, text: str) -> ArgValue | None:
    if spec.kind is ArgKind.INT:
        if not _INT.match(text):
            return None
        number = int(text)
        return number if number <= spec.max_int else None
    if spec.kind is ArgKind.UUID:
        return uuid_from_text(text)
    if not _WORD.match(text) or (spec.choices is not None and text not in spec.choices):
        return None
    return text


@dataclass(frozen=True)
class Action:
    """One kind of button: its name and the schema of its arguments."""

    name: str
    args: tuple[ArgSpec, ...] = ()
    owned: bool = True

    @property
    def prefix(self) -> str:
        return f"{VERSION}{SEP}{self.name}"

    @property
    def pattern(self) -> str:
        """Regex for `CallbackQueryHandler(pattern=...)`: this action, any (unchecked) args."""
        return "^" + re.escape(self.prefix) + r"(\||$)"

    def data(self, *values: ArgValue, owner: int | None = None) -> str:
        """Encode; raises ValueError for a programming error (wrong arg, over 64 bytes)."""
        if len(values) != len(self.args):
            raise ValueError(f"{self.name} takes {len(self.args)} args, got {len(values)}")
        parts = [VERSION, self.name]
        if self.owned:
            if owner is None or isinstance(owner, bool) or not 0 < owner <= MAX_INT:
                raise ValueError(f"{self.name} needs the owner's user id")
            parts.append(str(owner))
        elif owner is not None:
            raise ValueError(f"{self.name} is not owned")
        parts.extend(
            _encode_arg(spec, value) for spec, value in zip(self.args, values, strict=True)
        )
        text = SEP.join(parts)
        if len(text.encode("utf-8")) > MAX_BYTES:
            raise ValueError(f"callback data over {MAX_BYTES} bytes: {text!r}")
        return text


@dataclass(frozen=True)
class Callback:
    """Decoded, schema-checked callback data."""

    action: Action
    owner: builtins.int | None
    args: tuple[ArgValue, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.action.name

    def int(self, index: builtins.int) -> builtins.int:
        value = self.args[index]
        if not isinstance(value, int):
            raise TypeError(f"arg {index} of {self.name} is not an int")
        return value

    def uuid(self, index: builtins.int) -> UUID:
        value = self.args[index]
        if not isinstance(value, UUID):
            raise TypeError(f"arg {index} of {self.name} is not a uuid")
        return value

    def word(self, index: builtins.int) -> str:
        value = self.args[index]
        if not isinstance(value, str):
            raise TypeError(f"arg {index} of {self.name} is not a word")
        return value


_ACTIONS: dict[str, Action] = {}


def action(name: str, *args: ArgSpec, owned: bool = True) -> Action:
    """Declare (register) an action; declaring the same schema twice returns the same one."""
    if not _NAME.match(name):
        raise ValueError(f"bad action name {name!r}")
    declared = Action(name, tuple(args), owned)
    existing = _ACTIONS.setdefault(name, declared)
    if existing != declared:
        raise ValueError(f"action {name!r} already declared with another schema")
    return existing


def known_actions() -> dict[str, Action]:
    return dict(_ACTIONS)


def decode(data: str | None) -> Callback | None:
    """The callback of `data`, or None when it is forged, stale, malformed or unknown."""
    if not data or len(data.encode("utf-8", "replace")) > MAX_BYTES:
        return None
    parts = data.split(SEP)
    if len(parts) < 2 or parts[0] != VERSION:
        return None
    declared = _ACTIONS.get(parts[1])
    if declared is None:
        return None
    rest = parts[2:]
    owner: int | None = None
    if declared.owned:
        if not rest or not _INT.match(rest[0]):
            return None
        owner = int(rest[0])
        if not 0 < owner <= MAX_INT:
            return None
        rest = rest[1:]
    if len(rest) != len(declared.args):
        return None
    values: list[ArgValue] = []
    for spec, text in zip(declared.args, rest, strict=True):
        value = _decode_arg(spec, text)
        if value is None:
            return None
        values.append(value)
    return Callback(declared, owner, tuple(values))


# -- actions shared between handler modules ------------------------------------------------------

# Start a scene with a preselected character (handled by bot/handlers/scenes.py).
SCENE = action("scene", UUID_ARG)
# A button that does nothing (page indicator); answered silently by the app's fallback.
NOOP = action("noop", owned=False)


# -- builders ----------------------------------------------------------------------------------


def button(label: str, data: str) -> InlineKeyboardButton:
    return InlineKeyboardButton(label, callback_data=data)


def rows(buttons: Sequence[InlineKeyboardButton], per_row: int) -> list[list[InlineKeyboardButton]]:
    per_row = max(1, per_row)
    return [list(buttons[i : i + per_row]) for i in range(0, len(buttons), per_row)]


def page_count(total: int, per_page: int) -> int:
    return max(1, -(-max(0, total) // max(1, per_page)))


def nav_row(
    page: int, pages: int | None, nav: Callable[[int], str], *, has_next: bool | None = None
) -> list[InlineKeyboardButton]:
    """‹ n/m › navigation; `pages` None means unknown (then `has_next` decides)."""
    row: list[InlineKeyboardButton] = []
    if page > 0:
        row.append(button("‹", nav(page - 1)))
    more = (page + 1 < pages) if pages is not None else bool(has_next)
    if row or more:
        label = f"{page + 1}/{pages}" if pages is not None else str(page + 1)
        row.append(button(label, NOOP.data()))
    if more:
        row.append(button("›", nav(page + 1)))
    return row


def paged(
    items: Sequence[InlineKeyboardButton],
    page: int,
    pages: int | None,
    nav: Callable[[int], str],
    *,
    per_row: int = 1,
    has_next: bool | None = None,
    extra: Sequence[Sequence[InlineKeyboardButton]] = (),
) -> InlineKeyboardMarkup:
    """One page of item buttons, a navigation row when there is more than one page, extras."""
    keyboard = rows(items, per_row)
    navigation = nav_row(page, pages, nav, has_next=has_next)
    if navigation:
        keyboard.append(navigation)
    keyboard.extend(list(row) for row in extra)
    return InlineKeyboardMarkup(keyboard)


def confirm(
    yes_data: str,
    no_data: str,
    lang: str,
    *,
    yes_key: str = "common.yes",
    no_key: str = "common.no",
) -> InlineKeyboardMarkup:
    """A yes / no row (labels from the catalog)."""
    return InlineKeyboardMarkup(
        [[button(t_plain(yes_key, lang), yes_data), button(t_plain(no_key, lang), no_data)]]
    )


def multi_select(
    options: Sequence[tuple[str, str]],
    selected: Iterable[str],
    toggle: Callable[[str], str],
    done_data: str,
    lang: str,
    *,
    per_row: int = 2,
    done_key: str = "common.done",
) -> InlineKeyboardMarkup:
    """Toggle buttons (``(key, label)`` options; chosen ones ticked) and a Done button."""
    chosen = set(selected)
    buttons = [
        button(("✅ " if key in chosen else "▫️ ") + label, toggle(key)) for key, label in options
    ]
    keyboard = rows(buttons, per_row)
    keyboard.append([button(t_plain(done_key, lang), done_data)])
    return InlineKeyboardMarkup(keyboard)


def choice(
    options: Sequence[tuple[str, str]],
    current: str | None,
    pick: Callable[[str], str],
    *,
    per_row: int = 3,
    extra: Sequence[Sequence[InlineKeyboardButton]] = (),
) -> InlineKeyboardMarkup:
    """Single choice among ``(key, label)`` options; the current one is marked with •."""
    buttons = [
        button(("• " if key == current else "") + label, pick(key)) for key, label in options
    ]
    keyboard = rows(buttons, per_row)
    keyboard.extend(list(row) for row in extra)
    return InlineKeyboardMarkup(keyboard)

"""The message catalog: every user-visible text, in English and Russian.

Each module in this package (common.py, characters.py, scenes.py, ...) defines

    TEXTS: dict[str, dict[str, str]] = {"prefix.key": {"en": "...", "ru": "..."}}

and is merged here automatically (a key defined twice is an error). Texts are `str.format`
templates written in Telegram HTML (<b>, <i>, <code> allowed):

    t(key, lang, **kw)        -> HTML: kw values are HTML-escaped; send with parse_mode="HTML"
    t_plain(key, lang, **kw)  -> plain text for toasts (answerCallbackQuery), button labels and
                                 messages sent without parse_mode; tags are stripped

A language missing for a key falls back to English. `pick_language(code)` maps a Telegram
`language_code` to a catalog language.

Core's own messages (an `AnimeBotError.user_message`, a failed job's stored reason) are English
sentences, not keys: core stays language-free. `core_text(message, lang)` translates one by
matching it against the English templates of core_messages.py (`CORE_MESSAGES`): the message in
`lang` (its values kept as they are), the message unchanged in English or when no template
matches (e.g. ComfyUI's own words). The result is plain text: pass it as a value of `t(...)`
(which escapes it) or send it without parse_mode, like the English message before.
"""

from __future__ import annotations

import html
import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from string import Formatter
from typing import Any

from bot.texts.core_messages import CORE_MESSAGES, CORE_VALUES
from core.logs import get_logger

log = get_logger(__name__)

LANGUAGES = ("en", "ru")
DEFAULT_LANGUAGE = "en"
_TAG = re.compile(r"</?(?:b|i|u|s|code|pre|a)(?:\s[^>]*)?>")


def pick_language(code: str | None) -> str:
    """'ru', 'ru-RU' -> 'ru'; anything else (or nothing) -> 'en'."""
    if code:
        base = code.strip().lower().replace("_", "-").split("-", 1)[0]
        if base in LANGUAGES:
            return base
    return DEFAULT_LANGUAGE


@lru_cache(maxsize=1)
def catalog() -> dict[str, dict[str, str]]:
    """All texts of all modules of this package, merged."""
    merged: dict[str, dict[str, str]] = {}
    origin: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        texts: dict[str, dict[str, str]] = getattr(module, "TEXTS", {})
        for key, translations in texts.items():
            if key in merged:
                raise ValueError(f"text key {key!r} in {info.name} and {origin[key]}")
            merged[key] = translations
            origin[key] = info.name
    return merged


def template(key: str, lang: str) -> str:
    translations = catalog()[key]
    return translations.get(lang) or translations[DEFAULT_LANGUAGE]


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in Formatter().parse(text) if name}


def t(key: str, lang: str, **kw: Any) -> str:
    """The HTML text of `key` in `lang`, with `kw` HTML-escaped and filled in."""
    values = {k: html.escape(v) if isinstance(v, str) else v for k, v in kw.items()}
    return template(key, lang).format(**values)


def t_plain(key: str, lang: str, **kw: Any) -> str:
    """The plain text of `key` (tags removed, entities unescaped) with `kw` filled in as is."""
    plain = html.unescape(_TAG.sub("", template(key, lang)))
    return plain.format(**kw)


def has(key: str) -> bool:
    return key in catalog()


# -- core's messages ----------------------------------------------------------------------------

CORE_MESSAGE_LIMIT = 4096  # longer text is no core message (and is not worth matching)


@dataclass(frozen=True)
class CoreTemplate:
    """One entry of `CORE_MESSAGES`, compiled: `pattern` matches the whole English message."""

    english: str
    pattern: re.Pattern[str]
    translations: dict[str, str]
    prefix: int  # length of the fixed text before the first placeholder
    fixed: int  # length of all fixed text

    @property
    def specificity(self) -> tuple[int, int]:
        """Templates are tried in this order, highest first: a longer fixed start, then more
        fixed text ("The file is missing." before "{name} is missing.")."""
        return self.prefix, self.fixed


def compile_core_template(english: str, translations: dict[str, str]) -> CoreTemplate:
    """The anchored pattern of `english`: its text literally, each `{name}` a named group of any
    non-empty text. Raises ValueError for a template `core_text` could not use safely."""
    parts: list[str] = []
    names: list[str] = []
    literals: list[str] = []
    previous_was_field = False
    for literal, name, spec, conversion in Formatter().parse(english):
        if literal:
            parts.append(re.escape(literal))
            literals.append(literal)
            previous_was_field = False
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"core template {english!r}: use plain {{name}} placeholders")
        if name in names or previous_was_field:
            raise ValueError(f"core template {english!r}: repeated or adjacent {{{name}}}")
        names.append(name)
        parts.append(f"(?P<{name}>.+?)")
        previous_was_field = True
    for lang, text in translations.items():
        if placeholders(text) != set(names):
            raise ValueError(f"core template {english!r}: {lang} has other placeholders")
    pattern = re.compile("".join(parts), re.DOTALL)
    prefix = len(literals[0]) if literals and english.startswith(literals[0]) else 0
    return CoreTemplate(english, pattern, translations, prefix, sum(map(len, literals)))


@lru_cache(maxsize=1)
def core_templates() -> tuple[CoreTemplate, ...]:
    """`CORE_MESSAGES` compiled, the most specific first (`CoreTemplate.specificity`)."""
    compiled = [compile_core_template(en, tr) for en, tr in CORE_MESSAGES.items()]
    return tuple(sorted(compiled, key=lambda c: c.specificity, reverse=True))


def match_core(message: str) -> tuple[CoreTemplate, dict[str, str]] | None:
    """The template that matches all of `message` and the values of its placeholders."""
    if len(message) > CORE_MESSAGE_LIMIT:
        return None
    for template in core_templates():
        found = template.pattern.fullmatch(message)
        if found is not None:
            return template, found.groupdict()
    return None


def _value_form(lang: str, name: str) -> Callable[[str], str]:
    return CORE_VALUES.get(lang, {}).get(name, str)


def core_text(message: str, lang: str) -> str:
    """Core's English `message` in `lang`: translated when a template of `CORE_MESSAGES` matches
    it whole (its values kept verbatim, or as words of `CORE_VALUES`), else unchanged. Plain
    text: values are data, never markup or format fields."""
    if lang == DEFAULT_LANGUAGE or not message:
        return message
    found = match_core(message)
    if found is None:
        log.debug("core message not translated", lang=lang, message=message[:200])
        return message
    template, values = found
    translation = template.translations.get(lang)
    if translation is None:
        return message
    return translation.format(**{k: _value_form(lang, k)(v) for k, v in values.items()})

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
"""

from __future__ import annotations

import html
import importlib
import pkgutil
import re
from functools import lru_cache
from string import Formatter
from typing import Any

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

"""Core's English user messages in Russian: the catalog (bot/texts/core_messages.py) covers
every message core can produce (read from core's source, see tests/core_message_scan.py), and
`bot.texts.core_text` translates exactly, keeping values verbatim."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bot.texts as texts
from bot.render import JobProgress, Phase, progress_text
from bot.texts import compile_core_template, core_templates, core_text, match_core, t
from bot.texts.core_messages import CORE_MESSAGES
from core.models import JobKind
from tests.core_message_scan import HOLE, Found, Scanner, Template, core_messages, show

CYRILLIC = re.compile("[а-яё]", re.IGNORECASE)


def sample_values(template: Template) -> list[str]:
    return [f"⟦{i}⟧" for i, part in enumerate(template) if part is HOLE]


def sample(template: Template) -> str:
    """The message with each run-time part filled by a distinct marker."""
    values = iter(sample_values(template))
    return "".join(next(values) if part is HOLE else part for part in template)


def untranslated(found: list[Found]) -> list[str]:
    """What is wrong with the Russian of each found message (empty when all is well)."""
    problems: list[str] = []
    for item in found:
        fixed = "".join(p for p in item.template if p is not HOLE)
        if sum(c.isalpha() for c in fixed) < 3:
            problems.append(
                f"{item.where}: the message {show(item.template)!r} cannot be read from the "
                "source; build it from literals or f-strings, or teach tests/core_message_scan.py"
            )
            continue
        message = sample(item.template)
        russian = core_text(message, "ru")
        if core_text(message, "en") != message:
            problems.append(f"{item.where}: English changed: {message!r}")
        if russian == message or not CYRILLIC.search(russian):
            problems.append(
                f"{item.where}: no Russian in bot/texts/core_messages.py for {message!r}"
            )
            continue
        lost = [v for v in sample_values(item.template) if russian.count(v) != message.count(v)]
        if lost:
            problems.append(f"{item.where}: {message!r} -> {russian!r} loses {lost}")
    return problems


@pytest.fixture(scope="module")
def found() -> list[Found]:
    return core_messages()


# -- the catalog covers core -------------------------------------------------------------------


def test_every_core_message_has_a_russian_translation(found: list[Found]) -> None:
    assert len(found) > 100  # the scan sees core (about 150 message shapes)
    problems = untranslated(found)
    assert not problems, "\n".join(problems)


def test_every_catalog_entry_is_a_core_message(found: list[Found]) -> None:
    used = set()
    for item in found:
        match = match_core(sample(item.template))
        if match is not None:
            used.add(match[0].english)
    stale = [english for english in CORE_MESSAGES if english not in used]
    assert not stale, f"no core message matches these templates (typo, or gone from core): {stale}"


def test_catalog_templates_are_plain_russian() -> None:
    assert len(core_templates()) == len(CORE_MESSAGES)  # every entry compiles
    for english, translations in CORE_MESSAGES.items():
        assert set(translations) == {"ru"}, english
        russian = translations["ru"]
        assert CYRILLIC.search(russian), english
        assert "<" not in russian and "&" not in russian, english  # plain text, not HTML


# -- the scanner itself: it must see a new message wherever it is built --------------------------

_NEW_CORE = {
    "errors.py": """
        class AnimeBotError(Exception):
            default_user_message = "Something went wrong."
        class Odd(AnimeBotError):
            default_user_message = "A default nobody translated."
    """,
    "const.py": """
        BUSY = "A constant nobody translated."
    """,
    "raising.py": """
        from core.const import BUSY
        from core.errors import AnimeBotError
        _LOCAL = "A module constant nobody translated."
        def _reject(reason, user_message):
            return AnimeBotError(reason, user_message=user_message)
        def build(name, count):
            message = f"{name} has {count} things nobody translated."
            if count:
                raise AnimeBotError("x", user_message=message)
            raise _reject("y", "A helper argument nobody translated.")
        def closure(spec):
            def fail(reason):
                return AnimeBotError("z", user_message=f"{spec.name} {reason}.")
            raise fail("is odd and nobody translated it")
        def reason_of(error):
            where = error.node or "a place"
            where += f" (step {error.step})"
            return _scrub(f"Broke in {where} and nobody translated it")
        def deep(event, flag):
            raise AnimeBotError("d", user_message=reason_of(event))
        def many(flag):
            raise AnimeBotError(
                "m",
                user_message=(LOCAL_ONE if flag else BUSY) + " Nobody translated the tail.",
            )
        LOCAL_ONE = "Something went wrong."
        def plain():
            raise AnimeBotError("p", user_message=_LOCAL)
        class Runner:
            async def end(self, state, reason):
                await transition(state, error=reason)
            async def run(self, error):
                await self.end("failed", f"Stopped ({type(error).__name__}), nobody translated it.")
                await self.end("failed", error.user_message)
                await self.end("cancelled", None)
    """,
}


@pytest.fixture
def new_core(tmp_path: Path) -> Path:
    root = tmp_path / "core"
    root.mkdir()
    for name, source in _NEW_CORE.items():
        (root / name).write_text(textwrap.dedent(source), encoding="utf-8")
    return root


def test_a_new_untranslated_core_message_fails_the_check(new_core: Path) -> None:
    found = Scanner(new_core).messages()
    shown = sorted({show(f.template) for f in found})
    assert shown == sorted(
        [
            "Something went wrong.",  # known: translated
            "A default nobody translated.",  # default_user_message
            "A constant nobody translated. Nobody translated the tail.",  # imported constant, +
            "Something went wrong. Nobody translated the tail.",  # a constant defined later
            "A module constant nobody translated.",
            "{} has {} things nobody translated.",  # local variable
            "A helper argument nobody translated.",  # a helper's parameter, passed positionally
            "{} is odd and nobody translated it.",  # a closure's parameter
            "Broke in {} and nobody translated it",  # a call's return, `or`, `+=`
            "Broke in a place and nobody translated it",
            "Broke in {} (step {}) and nobody translated it",
            "Broke in a place (step {}) and nobody translated it",
            "Stopped ({}), nobody translated it.",  # transition(error=) through a parameter
        ]
    )
    problems = untranslated(found)
    assert len(problems) == len(shown) - 1
    assert all("no Russian" in p for p in problems)
    assert not any("Something went wrong.'" in p for p in problems)


def test_a_message_the_scanner_cannot_read_fails_the_check(tmp_path: Path) -> None:
    root = tmp_path / "core"
    root.mkdir()
    (root / "x.py").write_text(
        "def f(error):\n    raise Oops('x', user_message=error.describe())\n", encoding="utf-8"
    )
    (problem,) = untranslated(Scanner(root).messages())
    assert "cannot be read from the source" in problem and "core/x.py:2" in problem


# -- core_text ---------------------------------------------------------------------------------


def test_english_and_unknown_messages_are_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[tuple[str, dict[str, Any]]] = []

    class Recorder:
        def debug(self, event: str, **kw: Any) -> None:
            logged.append((event, kw))

    monkeypatch.setattr(texts, "log", Recorder())
    assert core_text("The GPU server interrupted the job.", "en") == (
        "The GPU server interrupted the job."
    )
    assert logged == []
    comfy = "CUDA error: an illegal memory access was encountered"
    assert core_text(comfy, "ru") == comfy
    assert logged == [("core message not translated", {"lang": "ru", "message": comfy})]
    assert core_text("", "ru") == ""
    # almost a known message is not that message: matching is whole and exact
    assert core_text("The GPU server interrupted the job", "ru") == (
        "The GPU server interrupted the job"
    )
    assert core_text("Note: The GPU server interrupted the job.", "ru").startswith("Note:")
    assert core_text("the gpu server interrupted the job.", "ru") == (
        "the gpu server interrupted the job."
    )


def test_a_known_message_in_russian() -> None:
    assert core_text("The GPU server interrupted the job.", "ru") == "GPU-сервер прервал задание."
    assert core_text("Unknown option --zoom. Known: --ar, --seed", "ru") == (
        "Неизвестный параметр --zoom. Известные: --ar, --seed"
    )


def test_values_keep_their_order_and_text() -> None:
    assert core_text("The name is too long (40 characters, at most 32).", "ru") == (
        "Поле «имя» слишком длинное (40 символов, максимум 32)."
    )
    small = "The image is too small (300x200): each side must be at least 512 px."
    assert core_text(small, "ru") == (
        "Картинка слишком маленькая (300x200): каждая сторона должна быть не меньше 512 пикс."
    )


@pytest.mark.parametrize(
    "value",
    [
        r"A.*(b)+\1 [^x] $ ^ \g<0> \d{2}",  # regex syntax
        "{0} {name} {{}} %s %(x)s {!r}",  # format syntax
        "<b>Ann</b> & <script>x</script> &amp;",  # HTML
        "Ann. Choose another name. Bob",  # the template's own text
        "Admins cannot be banned.",  # another whole core message
        "line\nbreak",
    ],
)
def test_values_are_data(value: str) -> None:
    message = f"You already have a character called {value}. Choose another name."
    russian = core_text(message, "ru")
    assert russian == f"У вас уже есть персонаж {value}. Выберите другое имя."
    html_text = t("common.failed", "ru", message=russian)  # escaping stays where it was
    assert "<b>" not in html_text and "<script>" not in html_text


def test_the_most_specific_template_wins() -> None:
    assert core_text("The file is missing.", "ru") == "Файл не найден."
    assert core_text("checkpoint is missing.", "ru") == "Не задан параметр checkpoint."
    assert core_text("steps must be at most 5 characters.", "ru") == (
        "Параметр steps должен быть не длиннее 5 символов."
    )
    assert core_text("steps must be at most 150.", "ru") == (
        "Параметр steps должен быть не больше 150."
    )
    rejected = "The workflow was rejected: KSampler (node 3): x must be at most 5 characters."
    assert core_text(rejected, "ru") == (
        "Воркфлоу отклонён: KSampler (node 3): x must be at most 5 characters."
    )
    assert core_text("Generation failed in KSampler (node 3): RuntimeError: OOM", "ru") == (
        "Ошибка генерации в KSampler (узел 3): RuntimeError: OOM"
    )


def test_a_cut_comfy_reason_is_still_translated() -> None:
    cut = "The workflow was rejected: CLIPTextEncode (node 6): Required input is miss…"
    assert core_text(cut, "ru") == (
        "Воркфлоу отклонён: CLIPTextEncode (node 6): Required input is miss…"
    )


@pytest.mark.parametrize(
    ("message", "russian"),
    [
        ("The appearance is empty. Please write it again.", "Поле «внешность» пустое."),
        ("The hat is empty. Please write it again.", "Поле «hat» пустое."),  # unknown: kept
        ("That job is already done.", "Это задание уже выполнено."),
        ("That result has no video to use.", "В этом результате нет видео."),
        ("Generation failed in a node: error", "Ошибка генерации в одном из узлов: ошибка"),
        ("The job took longer than 1 minute and was stopped.", "дольше 1 минуты"),
        ("The job took longer than 10 minutes and was stopped.", "дольше 10 минут"),
        ("The job took longer than 21 seconds and was stopped.", "дольше 21 секунды"),
        ("The job took longer than 11 minutes and was stopped.", "дольше 11 минут"),
        ("The job took longer than 1.5 hours and was stopped.", "дольше 1.5 часа"),
        ("The job took longer than 3 hours and was stopped.", "дольше 3 часов"),
        ("The job took longer than a while and was stopped.", "дольше a while"),
    ],
)
def test_known_words_among_the_values(message: str, russian: str) -> None:
    assert russian in core_text(message, "ru")


def test_a_very_long_text_is_not_matched() -> None:
    name = "A" * 5000
    message = f"You already have a character called {name}. Choose another name."
    assert core_text(message, "ru") == message


@pytest.fixture
def own_catalog(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(texts, "CORE_MESSAGES", {"{a} then {b}.": {"ru": "{b}, а до того {a}."}})
    core_templates.cache_clear()
    yield
    core_templates.cache_clear()


@pytest.mark.usefixtures("own_catalog")
def test_a_translation_may_reorder_placeholders() -> None:
    assert core_text("rain then sun.", "ru") == "sun, а до того rain."
    assert core_text("rain then sun.", "en") == "rain then sun."


@pytest.mark.parametrize(
    "english",
    [
        "{a} and {b}",  # ru names other placeholders
        "{a}{b} here",  # side by side: where does one end?
        "{a} and {a}",  # twice
        "{a!r} here",  # a conversion
        "{a:>5} here",  # a format spec
        "{0} here",  # not a name
    ],
)
def test_unusable_templates_are_refused(english: str) -> None:
    with pytest.raises(ValueError, match="core template"):
        compile_core_template(english, {"ru": "{a} и {b}" if "b" not in english else "{a}"})


# -- where core messages are shown ----------------------------------------------------------------


def test_a_failed_jobs_reason_is_shown_in_the_users_language() -> None:
    state = JobProgress(
        kind=JobKind.IMAGE,
        phase=Phase.FAILED,
        reason="Generation failed in <Sampler> (node 3): ValueError: a & b",
    )
    russian = progress_text(state, "ru")
    assert "Ошибка генерации в &lt;Sampler&gt; (узел 3): ValueError: a &amp; b" in russian
    english = progress_text(state, "en")
    assert "Generation failed in &lt;Sampler&gt; (node 3): ValueError: a &amp; b" in english

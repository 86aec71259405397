"""Translations of core's English user messages (`AnimeBotError.user_message`, a failed job's
stored reason), looked up by `bot.texts.core_text`.

Core stays language-free, so its messages are matched here by their English text:

    CORE_MESSAGES = {"English template": {"ru": "Russian template"}}

A template is the exact English message with each run-time value replaced by a named
placeholder, `{name}` (no format spec or conversion, each name once, never two placeholders
side by side). The whole message must match; each placeholder matches any non-empty text, and
when several templates match, the one with the most fixed text wins. The values are put into
the translation as they are, except where `CORE_VALUES` knows the word (e.g. a field name).

Every message core can produce is checked by tests/unit/test_core_texts.py, which reads core's
source: a new core message without a translation here fails that test. This module has no
`TEXTS`, so the key-based catalog of `bot.texts` does not merge it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

CORE_MESSAGES: dict[str, dict[str, str]] = {
    # -- core/errors.py defaults -----------------------------------------------------------
    "Something went wrong.": {"ru": "Что-то пошло не так."},
    "The bot is not configured correctly.": {"ru": "Бот настроен неправильно."},
    "The database is not available right now.": {"ru": "База данных сейчас недоступна."},
    "Not found.": {"ru": "Не найдено."},
    "That already exists.": {"ru": "Такое уже есть."},
    "That input cannot be used.": {"ru": "Эти данные не подходят."},
    "You have reached a limit.": {"ru": "Вы достигли лимита."},
    "That job cannot change state like that.": {"ru": "Задание не может так сменить состояние."},
    "The workflow is not usable.": {"ru": "Этот воркфлоу нельзя использовать."},
    "The GPU server failed.": {"ru": "Сбой GPU-сервера."},
    "The GPU server is not reachable.": {"ru": "GPU-сервер недоступен."},
    "The GPU server rejected the workflow.": {"ru": "GPU-сервер отклонил воркфлоу."},
    "The GPU server failed while generating.": {"ru": "Сбой GPU-сервера во время генерации."},
    "The result could not be processed.": {"ru": "Не удалось обработать результат."},
    "The media library is not available.": {"ru": "Медиатека недоступна."},
    "The music source is not available.": {"ru": "Источник музыки недоступен."},
    # -- access, users, characters (core/service.py, core/db) ---------------------------------
    "You cannot use this bot here.": {"ru": "Здесь этим ботом пользоваться нельзя."},
    "This bot is not enabled in this chat.": {"ru": "В этом чате бот не включён."},
    "You are not allowed to use this bot.": {"ru": "Вам нельзя пользоваться этим ботом."},
    "I have never seen that user.": {"ru": "Я не знаю такого пользователя."},
    "Admins cannot be banned.": {"ru": "Администраторов нельзя заблокировать."},
    "The {field} is empty. Please write it again.": {
        "ru": "Поле «{field}» пустое. Напишите его ещё раз."
    },
    "The {field} is too long ({length} characters, at most {limit}).": {
        "ru": "Поле «{field}» слишком длинное ({length} символов, максимум {limit})."
    },
    "A name uses letters, digits, spaces, dots, apostrophes or dashes, "
    "and starts with a letter or digit.": {
        "ru": "В имени можно использовать буквы, цифры, пробелы, точки, апострофы и дефисы; "
        "начинаться оно должно с буквы или цифры."
    },
    "You already have a character called {name}. Choose another name.": {
        "ru": "У вас уже есть персонаж {name}. Выберите другое имя."
    },
    "You have {count} characters already; delete one first.": {
        "ru": "У вас уже максимум персонажей ({count}); сначала удалите одного."
    },
    "That character does not exist (any more).": {"ru": "Этого персонажа больше нет."},
    "That character does not exist.": {"ru": "Такого персонажа нет."},
    "That cannot be edited.": {"ru": "Это нельзя изменить."},
    "Unknown style preset.": {"ru": "Неизвестный стиль."},
    "This character has no images yet.": {"ru": "У этого персонажа пока нет картинок."},
    # -- requests and jobs (core/service.py, core/director.py) ---------------------------------
    "Describe the scene to draw.": {"ru": "Опишите сцену, которую нужно нарисовать."},
    "Only videos get music.": {"ru": "Музыку можно добавить только к видео."},
    "You already have {count} jobs waiting or running; wait for one to finish or /cancel one.": {
        "ru": "Заданий в очереди и в работе у вас уже {count}: дождитесь, пока одно "
        "закончится, или отмените его через /cancel."
    },
    "You have used today's quota. It resets at midnight (UTC).": {
        "ru": "Дневная квота исчерпана. Она обновится в полночь (UTC)."
    },
    "That result is not from this chat.": {"ru": "Этот результат не из этого чата."},
    "That result has no {kind} to use.": {"ru": "В этом результате нет {kind}."},
    "That image cannot be upscaled.": {"ru": "Эту картинку нельзя увеличить."},
    "This is not your request.": {"ru": "Это не ваш запрос."},
    "That job is already {status}.": {"ru": "Это задание уже {status}."},
    "That job does not exist.": {"ru": "Такого задания нет."},
    "Bad image size.": {"ru": "Неверный размер картинки."},
    "Unknown style. Choose one of: {styles}": {
        "ru": "Неизвестный стиль. Выберите один из: {styles}"
    },
    "Unknown option --{flag}. Known: {known}": {
        "ru": "Неизвестный параметр --{flag}. Известные: {known}"
    },
    "--{flag} is given twice": {"ru": "--{flag} указан дважды"},
    "--{flag} needs a value": {"ru": "Для --{flag} нужно значение"},
    "--{flag} is only for videos": {"ru": "--{flag} работает только для видео"},
    "--{flag} must be a whole number from {low} to {high}, like --{example}": {
        "ru": "--{flag} — целое число от {low} до {high}, например --{example}"
    },
    "--{flag} must be a number from {low} to {high}, like --{example}": {
        "ru": "--{flag} — число от {low} до {high}, например --{example}"
    },
    "--ar must look like 16:9, between 1:4 and 4:1": {
        "ru": "--ar задаётся как 16:9, от 1:4 до 4:1"
    },
    "--length must be seconds from {low} to {high}, like --length 5s": {
        "ru": "--length — длительность в секундах от {low} до {high}, например --length 5s"
    },
    '--music needs a quoted search of at most {limit} characters, like --music "city pop"': {
        "ru": "--music — поисковый запрос в кавычках, до {limit} символов, "
        'например --music "city pop"'
    },
    "--no needs the things to avoid, like --no hats, glasses": {
        "ru": "После --no перечислите, чего избегать, например --no hats, glasses"
    },
    "Use either --frames or --length, not both": {
        "ru": "Укажите либо --frames, либо --length, но не оба сразу"
    },
    # -- workflows (core/workflows) --------------------------------------------------------------
    "There is no workflow called {name}.": {"ru": "Нет воркфлоу с именем {name}."},
    "Unknown option {option} for this workflow.": {
        "ru": "Неизвестный параметр {option} для этого воркфлоу."
    },
    "{name} is missing.": {"ru": "Не задан параметр {name}."},
    "{name} must be true or false.": {"ru": "Параметр {name} должен быть true или false."},
    "{name} must be a whole number.": {"ru": "Параметр {name} должен быть целым числом."},
    "{name} must be a number.": {"ru": "Параметр {name} должен быть числом."},
    "{name} must be a finite number.": {"ru": "Параметр {name} должен быть конечным числом."},
    "{name} must be text.": {"ru": "Параметр {name} должен быть текстом."},
    "{name} must be at most {limit} characters.": {
        "ru": "Параметр {name} должен быть не длиннее {limit} символов."
    },
    "{name} must be between {low} and {high}.": {
        "ru": "Параметр {name} должен быть от {low} до {high}."
    },
    "{name} must be at least {low}.": {"ru": "Параметр {name} должен быть не меньше {low}."},
    "{name} must be at most {high}.": {"ru": "Параметр {name} должен быть не больше {high}."},
    "{name} must be a multiple of {step}.": {"ru": "Параметр {name} должен быть кратен {step}."},
    "{name} must be one of {choices}.": {"ru": "Параметр {name} должен быть одним из: {choices}."},
    # -- running a job (core/jobs, core/comfy) ---------------------------------------------------
    "The job failed.": {"ru": "Задание завершилось ошибкой."},
    "Internal error ({name}).": {"ru": "Внутренняя ошибка ({name})."},
    "The workflow {name} is not installed.": {"ru": "Воркфлоу {name} не установлен."},
    "Its GPU server is no longer configured.": {
        "ru": "GPU-сервер этого задания больше не настроен."
    },
    "The input image of this job is gone.": {"ru": "Исходная картинка этого задания пропала."},
    "The job took longer than {duration} and was stopped.": {
        "ru": "Задание шло дольше {duration} и было остановлено."
    },
    "The GPU server interrupted the job.": {"ru": "GPU-сервер прервал задание."},
    "The workflow produced no image or video.": {"ru": "Воркфлоу не выдал ни картинки, ни видео."},
    "The GPU server went away while the result was being fetched.": {
        "ru": "GPU-сервер пропал, пока я забирал результат."
    },
    # ComfyUI's own words (node, exception, validation details) are kept as they are.
    "Generation failed in {node} (node {node_id}): {what}": {
        "ru": "Ошибка генерации в {node} (узел {node_id}): {what}"
    },
    "Generation failed in {node}: {what}": {"ru": "Ошибка генерации в {node}: {what}"},
    # No final "." here: a long reason is cut and ends with "…" instead.
    "The workflow was rejected: {reason}": {"ru": "Воркфлоу отклонён: {reason}"},
    "That file name is not allowed.": {"ru": "Такое имя файла недопустимо."},
    "The result file is missing on the GPU server.": {"ru": "Файла результата нет на GPU-сервере."},
    "The result is too large.": {"ru": "Результат слишком большой."},
    # -- reference photos and results (core/media) ---------------------------------------------
    "The file is too big: please send an image under {size} MB.": {
        "ru": "Файл слишком большой: пришлите картинку меньше {size} МБ."
    },
    "The file is empty: please send a photo.": {"ru": "Файл пустой: пришлите фото."},
    "The image has far too many pixels.": {"ru": "В картинке слишком много пикселей."},
    "That is not an image I can read: please send a JPEG, PNG or WebP photo.": {
        "ru": "Не могу прочитать эту картинку: пришлите фото в JPEG, PNG или WebP."
    },
    "The image is too large ({size}): please send one under {limit} megapixels.": {
        "ru": "Картинка слишком большая ({size}): пришлите картинку меньше {limit} Мп."
    },
    "The image is too small ({size}): each side must be at least {limit} px.": {
        "ru": "Картинка слишком маленькая ({size}): каждая сторона должна быть не меньше "
        "{limit} пикс."
    },
    "The image is too long and thin ({size}): crop it to at most {ratio}:1.": {
        "ru": "Картинка слишком вытянутая ({size}): обрежьте её до пропорций не больше {ratio}:1."
    },
    "The image file is damaged or incomplete: please send it again.": {
        "ru": "Файл картинки повреждён или загружен не полностью: пришлите его ещё раз."
    },
    "The image is too large to process.": {"ru": "Картинка слишком большая для обработки."},
    "The image is far too large.": {"ru": "Картинка чересчур большая."},
    "The image could not be made small enough.": {
        "ru": "Не удалось уменьшить картинку до нужного размера."
    },
    "The image file is damaged.": {"ru": "Файл картинки повреждён."},
    "This image format cannot carry generation details.": {
        "ru": "В этом формате картинки нельзя сохранить параметры генерации."
    },
    "The result is not a readable image.": {"ru": "Результат не читается как картинка."},
    "The result image is damaged.": {"ru": "Картинка-результат повреждена."},
    "The result is gone.": {"ru": "Результат пропал."},
    "The file is missing.": {"ru": "Файл не найден."},
    "The file is empty.": {"ru": "Файл пустой."},
    "The file is not an image, video or audio file I can read.": {
        "ru": "Не могу прочитать файл: это не картинка, не видео и не аудио."
    },
    # -- videos (core/media) -----------------------------------------------------------------------
    "That file is not a video.": {"ru": "Этот файл — не видео."},
    "The video file is damaged.": {"ru": "Видеофайл повреждён."},
    "A video frame is unreadable.": {"ru": "Не удалось прочитать кадр видео."},
    "The frames are too large.": {"ru": "Кадры слишком большие."},
    "The animation is damaged.": {"ru": "Анимация повреждена."},
    "There are no frames to make a video from.": {"ru": "Нет кадров, из которых собрать видео."},
    "The video could not be processed.": {"ru": "Не удалось обработать видео."},
    "Processing the video took too long.": {"ru": "Обработка видео заняла слишком много времени."},
    "Video processing is not available on this server right now.": {
        "ru": "Обработка видео сейчас недоступна на этом сервере."
    },
    "The video could not be converted for Telegram.": {
        "ru": "Не удалось преобразовать видео для Telegram."
    },
    "The video is too long to send through Telegram.": {
        "ru": "Видео слишком длинное, чтобы отправить его через Telegram."
    },
    "The video is too large to send through Telegram.": {
        "ru": "Видео слишком большое, чтобы отправить его через Telegram."
    },
    # -- music (core/music) -----------------------------------------------------------------------
    "Type a song or an artist to search.": {
        "ru": "Напишите название песни или имя исполнителя для поиска."
    },
    "Music search is busy, try again in {seconds} s.": {
        "ru": "Поиск музыки перегружен, попробуйте через {seconds} с."
    },
    "Music search is busy right now, please try again in a minute.": {
        "ru": "Поиск музыки сейчас перегружен, попробуйте через минуту."
    },
    "Music search is not reachable right now.": {"ru": "Поиск музыки сейчас недоступен."},
    "The song preview could not be downloaded.": {"ru": "Не удалось скачать фрагмент песни."},
    "That music file cannot be used.": {"ru": "Этот музыкальный файл не подходит."},
    "The local music folder is not available.": {"ru": "Локальная папка с музыкой недоступна."},
    "The soundtrack could not be added to the video.": {
        "ru": "Не удалось добавить музыку к видео."
    },
    "The music file has no sound I can use.": {"ru": "В музыкальном файле нет подходящего звука."},
    "That audio file is too large (at most {size} MB).": {
        "ru": "Аудиофайл слишком большой (максимум {size} МБ)."
    },
    "That file is not an audio file I can use. "
    "Send an mp3, m4a, ogg or wav file, or a voice message.": {
        "ru": "Этот файл не подходит как аудио. Пришлите файл mp3, m4a, ogg или wav "
        "либо голосовое сообщение."
    },
    # -- the media library (core/library) ----------------------------------------------------------
    "The media library is not reachable right now; it will be retried.": {
        "ru": "Медиатека сейчас недоступна; попробую ещё раз позже."
    },
    "The media library rejected the bot's API key.": {"ru": "Медиатека отклонила API-ключ бота."},
    "The media library is set up with another folder.": {
        "ru": "Медиатека настроена на другую папку."
    },
    "The media library is not set up.": {"ru": "Медиатека не настроена."},
    "This file type cannot be filed in the library.": {
        "ru": "Файлы такого типа нельзя добавить в медиатеку."
    },
}


# -- values that are words ------------------------------------------------------------------------


def _words(mapping: Mapping[str, str]) -> Callable[[str], str]:
    """A known word translated, anything else kept as it is."""
    return lambda value: mapping.get(value, value)


_RU_DURATION = re.compile(r"(\d+(?:\.\d+)?) (second|minute|hour)s?")
# After "дольше" (genitive): 1, 21, 1.5 -> "минуты"; 2, 5, 11, 25 -> "минут".
_RU_UNITS = {
    "second": ("секунды", "секунд"),
    "minute": ("минуты", "минут"),
    "hour": ("часа", "часов"),
}


def _ru_duration(value: str) -> str:
    """core.jobs.runner.duration_text ("45 seconds", "1 minute", "1.5 hours") in Russian,
    genitive ("дольше 10 минут"); the number itself is kept."""
    match = _RU_DURATION.fullmatch(value)
    if match is None:
        return value
    number, unit = match.groups()
    single, plural = _RU_UNITS[unit]
    whole = int(number) if number.isdigit() else None
    one = whole is None or (whole % 10 == 1 and whole % 100 != 11)
    return f"{number} {single if one else plural}"


_RU_FIELDS = {
    "name": "имя",
    "appearance": "внешность",
    "personality": "характер",
    "negative": "негативный промпт",
    "negative prompt": "негативный промпт",
    "music search": "поиск музыки",
    "scene": "сцена",
}
_RU_NODE = {"a node": "одном из узлов"}

# lang -> placeholder -> translation of its value (identity for anything not known).
CORE_VALUES: dict[str, dict[str, Callable[[str], str]]] = {
    "ru": {
        "field": _words(_RU_FIELDS),
        "kind": _words({"image": "картинки", "video": "видео"}),  # genitive: "нет картинки"
        "status": _words(
            {
                "done": "выполнено",
                "failed": "завершилось ошибкой",
                "cancelled": "отменено",
                "delivering": "отправляется",
            }
        ),
        "node": _words(_RU_NODE),
        "what": _words({"error": "ошибка"}),
        "duration": _ru_duration,
    },
}

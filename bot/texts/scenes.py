"""Texts of scenes (/image, /video, /animate), progress messages, results and their buttons."""

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    # -- asking for a scene -------------------------------------------------------------------
    "scenes.usage_image": {
        "en": "Describe the scene after the command, for example:\n"
        "<code>/image @Aiko reading in a rainy café --ar 16:9</code>",
        "ru": "Опишите сцену после команды, например:\n"
        "<code>/image @Aiko читает в дождливом кафе --ar 16:9</code>",
    },
    "scenes.usage_video": {
        "en": "Describe the scene after the command, for example:\n"
        "<code>/video @Aiko waving on a beach --length 4s</code>",
        "ru": "Опишите сцену после команды, например:\n"
        "<code>/video @Aiko машет рукой на пляже --length 4s</code>",
    },
    "scenes.usage_animate": {
        "en": "Reply <code>/animate</code> to one of my pictures to turn it into a video. "
        "You may add what should happen: <code>/animate she turns and smiles</code>",
        "ru": "Ответьте <code>/animate</code> на мою картинку, чтобы превратить её в видео. "
        "Можно добавить, что должно происходить: <code>/animate она оборачивается и "
        "улыбается</code>",
    },
    "scenes.animate_not_result": {
        "en": "That message is not one of my pictures. Reply <code>/animate</code> to an image "
        "I made.",
        "ru": "Это не моя картинка. Ответьте <code>/animate</code> на изображение, которое "
        "сделал я.",
    },
    "scenes.pick_characters": {
        "en": "Who is in this scene? Tap your characters, then <b>Done</b>.\n<i>{scene}</i>",
        "ru": "Кто в этой сцене? Отметьте персонажей и нажмите <b>Готово</b>.\n<i>{scene}</i>",
    },
    "scenes.pick_none": {"en": "Nobody, just the scene", "ru": "Без персонажей"},
    "scenes.pick_expired": {
        "en": "This request has expired; send the command again.",
        "ru": "Этот запрос устарел; отправьте команду ещё раз.",
    },
    "scenes.pick_cancelled": {
        "en": "Scene cancelled.",
        "ru": "Сцена отменена.",
    },
    "scenes.ask_scene": {
        "en": "🎬 What happens in the scene with <b>{name}</b>? Reply with a description "
        "(options like <code>--ar 16:9</code> work too). Start it with /video for a video.",
        "ru": "🎬 Что происходит в сцене с <b>{name}</b>? Ответьте описанием (параметры вроде "
        "<code>--ar 16:9</code> тоже работают). Начните с /video, чтобы получить видео.",
    },
    "scenes.ask_placeholder": {
        "en": "She reads in a rainy café…",
        "ru": "Она читает в дождливом кафе…",
    },
    "scenes.ask_toast": {"en": "Describe the scene.", "ru": "Опишите сцену."},
    "scenes.ask_closed": {
        "en": "This question is closed: it was answered, it expired or newer ones replaced it. "
        "Tap <b>{button}</b> on the character again, or send <code>/image</code> with the "
        "scene.",
        "ru": "Этот вопрос закрыт: на него уже ответили, он устарел или его сменили новые. "
        "Снова нажмите <b>{button}</b> у персонажа или отправьте <code>/image</code> с "
        "описанием сцены.",
    },
    # -- progress message -----------------------------------------------------------------------
    "scenes.kind_image": {"en": "Image", "ru": "Картинка"},
    "scenes.kind_video": {"en": "Video", "ru": "Видео"},
    "scenes.op_reroll": {"en": "Reroll", "ru": "Новый вариант"},
    "scenes.op_variation": {"en": "Variation", "ru": "Вариация"},
    "scenes.op_upscale": {"en": "Upscale", "ru": "Увеличение"},
    "scenes.op_animate": {"en": "Animation", "ru": "Анимация"},
    "scenes.op_sheet": {"en": "Character sheet", "ru": "Лист персонажа"},
    "scenes.phase_queued": {
        "en": "⏳ <b>{what}</b> · waiting in line",
        "ru": "⏳ <b>{what}</b> · в очереди",
    },
    "scenes.phase_starting": {
        "en": "🚀 <b>{what}</b> · starting on a GPU…",
        "ru": "🚀 <b>{what}</b> · запускаю на GPU…",
    },
    "scenes.phase_running": {
        "en": "🎨 <b>{what}</b> · generating",
        "ru": "🎨 <b>{what}</b> · генерирую",
    },
    "scenes.phase_postprocessing": {
        "en": "⚙️ <b>{what}</b> · finishing (post-processing)…",
        "ru": "⚙️ <b>{what}</b> · обработка…",
    },
    "scenes.phase_uploading": {
        "en": "📤 <b>{what}</b> · uploading…",
        "ru": "📤 <b>{what}</b> · загружаю…",
    },
    "scenes.phase_done": {"en": "✅ <b>{what}</b> · done", "ru": "✅ <b>{what}</b> · готово"},
    "scenes.phase_failed": {
        "en": "❌ <b>{what}</b> · failed",
        "ru": "❌ <b>{what}</b> · не получилось",
    },
    "scenes.phase_cancelling": {
        "en": "⏹ <b>{what}</b> · cancelling…",
        "ru": "⏹ <b>{what}</b> · отменяю…",
    },
    "scenes.phase_cancelled": {
        "en": "🚫 <b>{what}</b> · cancelled",
        "ru": "🚫 <b>{what}</b> · отменено",
    },
    "scenes.scene_line": {"en": "<i>{scene}</i>", "ru": "<i>{scene}</i>"},
    "scenes.position": {
        "en": "#{position} in line · ready in {eta}",
        "ru": "№{position} в очереди · будет готово через {eta}",
    },
    "scenes.position_no_eta": {"en": "#{position} in line", "ru": "№{position} в очереди"},
    "scenes.waiting_gpu": {
        "en": "Waiting for a free GPU server…",
        "ru": "Жду свободный GPU-сервер…",
    },
    "scenes.bar": {"en": "<code>{bar}</code> {percent}%", "ru": "<code>{bar}</code> {percent}%"},
    "scenes.step": {"en": "step {step}/{steps}", "ru": "шаг {step}/{steps}"},
    "scenes.node": {"en": "node {node}", "ru": "узел {node}"},
    "scenes.eta_left": {"en": "{eta} left", "ru": "осталось {eta}"},
    "scenes.reason": {"en": "{reason}", "ru": "{reason}"},
    "scenes.eta_seconds": {"en": "~{n} s", "ru": "~{n} с"},
    "scenes.eta_minutes": {"en": "~{n} min", "ru": "~{n} мин"},
    "scenes.eta_hours": {"en": "~{h} h {m} min", "ru": "~{h} ч {m} мин"},
    "scenes.eta_hours_even": {"en": "~{h} h", "ru": "~{h} ч"},
    "scenes.btn_cancel": {"en": "✖️ Cancel", "ru": "✖️ Отменить"},
    # -- result caption -------------------------------------------------------------------------
    "scenes.caption_scene": {"en": "<i>{scene}</i>", "ru": "<i>{scene}</i>"},
    "scenes.caption_characters": {"en": "👤 {names}", "ru": "👤 {names}"},
    "scenes.caption_seed": {
        "en": "🎲 seed <code>{seed}</code>",
        "ru": "🎲 сид <code>{seed}</code>",
    },
    "scenes.caption_seed_op": {
        "en": "🎲 seed <code>{seed}</code> · {op}",
        "ru": "🎲 сид <code>{seed}</code> · {op}",
    },
    "scenes.caption_op": {"en": "{op}", "ru": "{op}"},
    "scenes.caption_no_music": {
        "en": "🔇 Sent without music: {reason}.",
        "ru": "🔇 Отправлено без музыки: {reason}.",
    },
    "scenes.no_music_gone": {
        "en": "the music file is no longer available",
        "ru": "файла с музыкой больше нет",
    },
    "scenes.no_music_source_off": {
        "en": "that music source has been turned off",
        "ru": "этот источник музыки отключён",
    },
    "scenes.no_music_download_failed": {
        "en": "the song preview could not be downloaded",
        "ru": "не удалось скачать отрывок песни",
    },
    "scenes.no_music_unusable": {
        "en": "the music file has no sound I can use",
        "ru": "в файле с музыкой нет звука, который я могу использовать",
    },
    "scenes.no_music_unknown": {
        "en": "the music could not be added",
        "ru": "музыку не удалось добавить",
    },
    "scenes.caption_link": {
        "en": '📚 <a href="{url}">Open in the library</a>',
        "ru": '📚 <a href="{url}">Открыть в медиатеке</a>',
    },
    # -- result buttons -------------------------------------------------------------------------
    "scenes.btn_reroll": {"en": "🔁 Reroll", "ru": "🔁 Ещё раз"},
    "scenes.btn_variations": {"en": "🎲 Variations", "ru": "🎲 Вариации"},
    "scenes.btn_upscale": {"en": "🔍 Upscale", "ru": "🔍 Увеличить"},
    "scenes.btn_animate": {"en": "🎬 Animate", "ru": "🎬 Оживить"},
    "scenes.btn_reference": {"en": "📌 Use as reference", "ru": "📌 Сделать референсом"},
    "scenes.btn_original": {"en": "📄 Original", "ru": "📄 Оригинал"},
    # -- result button answers ------------------------------------------------------------------
    "scenes.started_toast": {"en": "Started.", "ru": "Запущено."},
    "scenes.cancel_toast": {"en": "Cancelled.", "ru": "Отменено."},
    "scenes.cancelling_toast": {"en": "Stopping…", "ru": "Останавливаю…"},
    "scenes.original_caption": {
        "en": "Original file, {width}×{height}",
        "ru": "Исходный файл, {width}×{height}",
    },
    "scenes.original_caption_plain": {"en": "Original file", "ru": "Исходный файл"},
    "scenes.undeliverable": {
        "en": "⚠️ The result is ready, but Telegram would not take it, so it cannot be shown here.",
        "ru": "⚠️ Результат готов, но Telegram его не принял, поэтому показать его здесь нельзя.",
    },
    "scenes.undeliverable_too_big": {
        "en": "⚠️ The result is ready, but it is larger than the 50 MB Telegram lets a bot "
        "send, so it cannot be shown here.",
        "ru": "⚠️ Результат готов, но он больше 50 МБ, которые Telegram разрешает отправлять "
        "боту, поэтому показать его здесь нельзя.",
    },
    "scenes.original_gone": {
        "en": "The original file is no longer stored.",
        "ru": "Исходный файл больше не хранится.",
    },
    "scenes.original_refused": {
        "en": "Telegram refused to send the file here: the topic may be closed, or I may not "
        "be allowed to send files in this chat.",
        "ru": "Telegram не дал отправить файл сюда: возможно, тема закрыта или мне нельзя "
        "отправлять файлы в этот чат.",
    },
    "scenes.original_too_big": {
        "en": "The original is too big to send through Telegram.",
        "ru": "Оригинал слишком большой для отправки через Telegram.",
    },
    "scenes.ref_pick": {
        "en": "Which character should use this picture as a reference?",
        "ru": "Какому персонажу добавить эту картинку как референс?",
    },
    "scenes.ref_no_characters": {
        "en": "You have no characters yet: create one with /newcharacter.",
        "ru": "У вас пока нет персонажей: создайте их командой /newcharacter.",
    },
    "scenes.ref_added": {
        "en": "Added as a reference of {name}.",
        "ru": "Добавлено как референс для {name}.",
    },
    "scenes.not_a_result": {
        "en": "I cannot find the job of this message any more.",
        "ru": "Я больше не нахожу задание этого сообщения.",
    },
    "scenes.no_image": {
        "en": "This result has no picture to use.",
        "ru": "В этом результате нет картинки.",
    },
}

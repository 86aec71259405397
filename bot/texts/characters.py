"""Texts of /newcharacter, /characters and the character card."""

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    # -- /newcharacter ----------------------------------------------------------------------
    "chars.ask_name": {
        "en": "Let's create a character! What is their <b>name</b>? (letters, digits, spaces; "
        "up to {max} characters)\nSend /cancel to stop at any step.",
        "ru": "Создадим персонажа! Как его <b>зовут</b>? (буквы, цифры, пробелы; до {max} "
        "символов)\nОтправьте /cancel, чтобы остановиться на любом шаге.",
    },
    "chars.name_empty": {
        "en": "The name is empty. Please send the name as text.",
        "ru": "Имя пустое. Пришлите имя текстом.",
    },
    "chars.name_too_long": {
        "en": "That name is too long ({length} characters, at most {max}). Send a shorter one.",
        "ru": "Имя слишком длинное ({length} символов, максимум {max}). Пришлите короче.",
    },
    "chars.name_bad": {
        "en": "A name may use letters, digits, spaces, dots, apostrophes and dashes, and must "
        "start with a letter or digit. Send another name.",
        "ru": "В имени можно использовать буквы, цифры, пробелы, точки, апострофы и дефисы; "
        "начинаться оно должно с буквы или цифры. Пришлите другое имя.",
    },
    "chars.name_taken": {
        "en": "You already have a character called {name}. Send another name.",
        "ru": "У вас уже есть персонаж {name}. Пришлите другое имя.",
    },
    "chars.ask_appearance": {
        "en": "How does <b>{name}</b> look? Hair, eyes, clothes, age, build… "
        "(up to {max} characters)",
        "ru": "Как выглядит <b>{name}</b>? Волосы, глаза, одежда, возраст, телосложение… "
        "(до {max} символов)",
    },
    "chars.appearance_empty": {
        "en": "The description is empty. Describe how {name} looks, in words.",
        "ru": "Описание пустое. Опишите словами, как выглядит {name}.",
    },
    "chars.appearance_too_long": {
        "en": "That description is too long ({length} characters, at most {max}). "
        "Send a shorter one.",
        "ru": "Описание слишком длинное ({length} символов, максимум {max}). Пришлите короче.",
    },
    "chars.ask_style": {
        "en": "Which <b>style</b> suits {name}? Tap one.",
        "ru": "Какой <b>стиль</b> подходит {name}? Нажмите на кнопку.",
    },
    "chars.style_use_buttons": {
        "en": "Please tap one of the style buttons above (or /cancel).",
        "ru": "Нажмите одну из кнопок стиля выше (или /cancel).",
    },
    "chars.ask_personality": {
        "en": "Describe {name}'s <b>personality</b> in a few words (shy, cheerful, stubborn…), "
        "or send /skip.",
        "ru": "Опишите <b>характер</b> {name} в нескольких словах (застенчивая, весёлый, "
        "упрямый…) или отправьте /skip.",
    },
    "chars.personality_too_long": {
        "en": "That is too long ({length} characters, at most {max}). Send a shorter one, "
        "or /skip.",
        "ru": "Слишком длинно ({length} символов, максимум {max}). Пришлите короче или /skip.",
    },
    "chars.ask_reference": {
        "en": "Send a <b>reference photo</b> of {name}: a clear picture keeps the face the same "
        "in every scene. Or send /skip.",
        "ru": "Пришлите <b>фото-референс</b> {name}: чёткая картинка помогает сохранять лицо "
        "в каждой сцене. Или отправьте /skip.",
    },
    "chars.reference_not_photo": {
        "en": "That is not a photo. Send a photo (or an image file), or /skip.",
        "ru": "Это не фото. Пришлите фото (или файл-картинку) или /skip.",
    },
    "chars.reference_too_big": {
        "en": "That file is too big ({size} MB); send an image under {max} MB, or /skip.",
        "ru": "Файл слишком большой ({size} МБ); пришлите картинку меньше {max} МБ или /skip.",
    },
    "chars.reference_retry": {
        "en": "{message}\nSend another photo, or /skip.",
        "ru": "{message}\nПришлите другое фото или /skip.",
    },
    "chars.confirm": {
        "en": "<b>{name}</b>\nAppearance: {appearance}\nStyle: {style}\nPersonality: "
        "{personality}\nReference photo: {reference}\n\nCreate this character?",
        "ru": "<b>{name}</b>\nВнешность: {appearance}\nСтиль: {style}\nХарактер: "
        "{personality}\nФото-референс: {reference}\n\nСоздать персонажа?",
    },
    "chars.confirm_use_buttons": {
        "en": "Tap <b>Create</b> or <b>Cancel</b> above.",
        "ru": "Нажмите <b>Создать</b> или <b>Отмена</b> выше.",
    },
    "chars.btn_create": {"en": "Create", "ru": "Создать"},
    "chars.none_value": {"en": "—", "ru": "—"},
    "chars.created": {
        "en": "<b>{name}</b> is ready! Try: <code>/image @{name} in a sunny park</code>",
        "ru": "<b>{name}</b> готов(а)! Попробуйте: <code>/image @{name} в солнечном парке</code>",
    },
    # -- /characters and the card ---------------------------------------------------------------
    "chars.none": {
        "en": "You have no characters yet. Create one with /newcharacter.",
        "ru": "У вас пока нет персонажей. Создайте: /newcharacter.",
    },
    "chars.list_title": {
        "en": "<b>Your characters</b> ({total}). Tap one to open it.",
        "ru": "<b>Ваши персонажи</b> ({total}). Нажмите, чтобы открыть.",
    },
    "chars.card": {
        "en": "<b>{name}</b> · {style}\n{appearance}",
        "ru": "<b>{name}</b> · {style}\n{appearance}",
    },
    "chars.card_personality": {"en": "<i>{personality}</i>", "ru": "<i>{personality}</i>"},
    "chars.btn_scene": {"en": "🎬 Use in a scene", "ru": "🎬 В сцену"},
    "chars.btn_edit": {"en": "✏️ Edit", "ru": "✏️ Изменить"},
    "chars.btn_sheet": {"en": "🗂 Character sheet", "ru": "🗂 Лист персонажа"},
    "chars.btn_delete": {"en": "🗑 Delete", "ru": "🗑 Удалить"},
    "chars.delete_confirm": {
        "en": "Delete <b>{name}</b>? This cannot be undone.",
        "ru": "Удалить <b>{name}</b>? Это нельзя отменить.",
    },
    "chars.deleted": {"en": "{name} was deleted.", "ru": "{name} удалён(а)."},
    "chars.kept": {"en": "Kept.", "ru": "Оставлено."},
    "chars.edit_pick": {
        "en": "What do you want to change about <b>{name}</b>?",
        "ru": "Что изменить у <b>{name}</b>?",
    },
    "chars.field_name": {"en": "Name", "ru": "Имя"},
    "chars.field_appearance": {"en": "Appearance", "ru": "Внешность"},
    "chars.field_personality": {"en": "Personality", "ru": "Характер"},
    "chars.field_style": {"en": "Style", "ru": "Стиль"},
    "chars.field_reference": {"en": "Reference photo", "ru": "Фото-референс"},
    "chars.edit_ask_text": {
        "en": "Send the new <b>{field}</b> of {name}. Now: {current}\n/cancel keeps it.",
        "ru": "Пришлите новое значение «{field}» для {name}. Сейчас: {current}\n"
        "/cancel — оставить как есть.",
    },
    "chars.edit_ask_reference": {
        "en": "Send the new reference photo of {name}, or /cancel.",
        "ru": "Пришлите новое фото-референс {name} или /cancel.",
    },
    "chars.edit_style_pick": {
        "en": "Choose a style for <b>{name}</b>:",
        "ru": "Выберите стиль для <b>{name}</b>:",
    },
    "chars.edit_saved": {"en": "Saved.", "ru": "Сохранено."},
    "chars.open_again": {
        "en": "Open the character again.",
        "ru": "Откройте персонажа ещё раз.",
    },
    "chars.edit_text_only": {
        "en": "Please send the new value as text, or /cancel.",
        "ru": "Пришлите новое значение текстом или /cancel.",
    },
    "chars.sheet_working": {"en": "Making the sheet…", "ru": "Собираю лист…"},
    "chars.sheet_empty": {
        "en": "There are no pictures of {name} yet: add a reference photo or make a scene first.",
        "ru": "Картинок с {name} пока нет: добавьте фото-референс или сначала создайте сцену.",
    },
    "chars.sheet_caption": {
        "en": "<b>{name}</b>: character sheet ({count} pictures)",
        "ru": "<b>{name}</b>: лист персонажа ({count} изобр.)",
    },
    "chars.sheet_reference": {"en": "reference", "ru": "референс"},
}

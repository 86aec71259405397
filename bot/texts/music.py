"""Texts of video soundtracks: `--music` search results, own audio, the caption credit."""

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    # -- choosing ---------------------------------------------------------------------------
    "music.only_videos": {
        "en": '🎵 Music is only for videos. Use <code>/video … --music "city pop"</code>, '
        "or leave out <code>--music</code>.",
        "ru": "🎵 Музыка бывает только у видео. Используйте "
        '<code>/video … --music "city pop"</code> или уберите <code>--music</code>.',
    },
    "music.choose": {
        "en": "🎵 Pick the soundtrack for your video (search: <b>{query}</b>).\n<i>{scene}</i>",
        "ru": "🎵 Выберите музыку для видео (поиск: <b>{query}</b>).\n<i>{scene}</i>",
    },
    "music.nothing_found": {
        "en": "🎵 I found no music for <b>{query}</b>. Send your own audio, or make the video "
        "without music.\n<i>{scene}</i>",
        "ru": "🎵 По запросу <b>{query}</b> музыка не нашлась. Пришлите своё аудио или снимите "
        "видео без музыки.\n<i>{scene}</i>",
    },
    "music.busy": {
        "en": "🎵 The music search is busy right now (too many searches). Try again in a "
        "minute, send your own audio, or make the video without music.\n<i>{scene}</i>",
        "ru": "🎵 Поиск музыки сейчас перегружен (слишком много запросов). Попробуйте через "
        "минуту, пришлите своё аудио или снимите видео без музыки.\n<i>{scene}</i>",
    },
    "music.unavailable": {
        "en": "🎵 Music search is not set up on this bot: only your own audio can be used. "
        "Send an audio file or a voice message, or make the video without music.\n"
        "<i>{scene}</i>",
        "ru": "🎵 Поиск музыки в этом боте не настроен: можно использовать только своё аудио. "
        "Пришлите аудиофайл или голосовое сообщение либо снимите видео без музыки.\n"
        "<i>{scene}</i>",
    },
    "music.label_itunes": {
        "en": "🎵 {title} — {artist} · iTunes",
        "ru": "🎵 {title} — {artist} · iTunes",
    },
    "music.label_local": {"en": "📁 {title} · local", "ru": "📁 {title} · локально"},
    "music.btn_own": {"en": "🎤 Send my own audio", "ru": "🎤 Прислать своё аудио"},
    "music.btn_none": {"en": "🔇 No music", "ru": "🔇 Без музыки"},
    "music.expired": {
        "en": "This music choice has expired; send the command again.",
        "ru": "Этот выбор музыки устарел; отправьте команду ещё раз.",
    },
    "music.cancelled": {"en": "Video cancelled.", "ru": "Видео отменено."},
    # -- own audio --------------------------------------------------------------------------
    "music.ask_audio": {
        "en": "🎤 Send me the audio for the video: an audio file (mp3, m4a, ogg, wav, flac) or "
        "a voice message, at most {max} MB.\n<i>{scene}</i>",
        "ru": "🎤 Пришлите звук для видео: аудиофайл (mp3, m4a, ogg, wav, flac) или голосовое "
        "сообщение, не больше {max} МБ.\n<i>{scene}</i>",
    },
    "music.ask_audio_group": {
        "en": "🎤 Reply to this message with the audio for the video: an audio file (mp3, m4a, "
        "ogg, wav, flac) or a voice message, at most {max} MB.\n<i>{scene}</i>",
        "ru": "🎤 Ответьте на это сообщение звуком для видео: аудиофайлом (mp3, m4a, ogg, wav, "
        "flac) или голосовым сообщением, не больше {max} МБ.\n<i>{scene}</i>",
    },
    "music.not_audio": {
        "en": "That is not an audio file. Send an mp3, m4a, ogg or wav file or a voice message.",
        "ru": "Это не аудиофайл. Пришлите mp3, m4a, ogg или wav либо голосовое сообщение.",
    },
    "music.too_big": {
        "en": "That file is too large ({size} MB): I can take audio of at most {max} MB.",
        "ru": "Файл слишком большой ({size} МБ): я принимаю аудио не больше {max} МБ.",
    },
    "music.voice_title": {"en": "Voice message", "ru": "Голосовое сообщение"},
    "music.got_audio": {"en": "🎵 Soundtrack: <b>{title}</b>", "ru": "🎵 Музыка: <b>{title}</b>"},
    # -- result caption ---------------------------------------------------------------------
    "music.credit": {"en": "♪ {title} — {artist}", "ru": "♪ {title} — {artist}"},
    "music.credit_title": {"en": "♪ {title}", "ru": "♪ {title}"},
    "music.credit_store": {
        "en": '<a href="{url}">Listen on Apple Music</a>',
        "ru": '<a href="{url}">Слушать в Apple Music</a>',
    },
}

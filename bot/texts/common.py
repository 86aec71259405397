"""Texts shared by every part of the bot: buttons, errors, /start, /help, settings, admin, queue."""

from __future__ import annotations

TEXTS: dict[str, dict[str, str]] = {
    # -- buttons and toasts ----------------------------------------------------------------
    "common.yes": {"en": "Yes", "ru": "Да"},
    "common.no": {"en": "No", "ru": "Нет"},
    "common.done": {"en": "Done", "ru": "Готово"},
    "common.cancel": {"en": "Cancel", "ru": "Отмена"},
    "common.back": {"en": "‹ Back", "ru": "‹ Назад"},
    "common.on": {"en": "on", "ru": "вкл."},
    "common.off": {"en": "off", "ru": "выкл."},
    "common.not_yours": {
        "en": "This is not your request.",
        "ru": "Это не ваш запрос.",
    },
    "common.stale_button": {
        "en": "This button is no longer valid.",
        "ru": "Эта кнопка больше не действует.",
    },
    "common.slow_down": {
        "en": "You are sending commands too fast. Please wait a few seconds.",
        "ru": "Вы отправляете команды слишком быстро. Подождите несколько секунд.",
    },
    "common.slow_down_toast": {
        "en": "Too fast, wait a moment.",
        "ru": "Слишком быстро, подождите.",
    },
    "common.error": {
        "en": "Sorry, something went wrong on my side. Reference: <code>{ref}</code>",
        "ru": "Извините, у меня что-то сломалось. Код ошибки: <code>{ref}</code>",
    },
    "common.failed": {"en": "{message}", "ru": "{message}"},
    "common.anonymous_sender": {
        "en": "You are writing on behalf of a group or a channel, so I cannot tell who you are. "
        "Please write from your own account (group admins: turn off “Remain anonymous” in your "
        "admin rights).",
        "ru": "Вы пишете от имени группы или канала, поэтому я не знаю, кто вы. Пожалуйста, "
        "пишите от своего аккаунта (администраторам группы: отключите «Анонимность» в своих "
        "правах администратора).",
    },
    "common.cancelled": {
        "en": "Cancelled. Nothing was saved.",
        "ru": "Отменено. Ничего не сохранено.",
    },
    "common.timeout": {
        "en": "I stopped waiting for your answer; start again when you are ready.",
        "ru": "Я перестал ждать ответа; начните заново, когда будете готовы.",
    },
    # -- command descriptions (setMyCommands; plain text) -----------------------------------
    "cmd.start": {"en": "Welcome and quick start", "ru": "Приветствие и быстрый старт"},
    "cmd.help": {"en": "All commands with examples", "ru": "Все команды с примерами"},
    "cmd.newcharacter": {"en": "Create a character", "ru": "Создать персонажа"},
    "cmd.characters": {"en": "Your characters", "ru": "Ваши персонажи"},
    "cmd.image": {"en": "Draw a scene", "ru": "Нарисовать сцену"},
    "cmd.video": {"en": "Make a short video", "ru": "Снять короткое видео"},
    "cmd.animate": {
        "en": "Animate an image (reply to it)",
        "ru": "Оживить картинку (ответом на неё)",
    },
    "cmd.queue": {"en": "Your jobs in the queue", "ru": "Ваши задания в очереди"},
    "cmd.cancel": {
        "en": "Cancel a job or the current dialog",
        "ru": "Отменить задание или текущий диалог",
    },
    "cmd.history": {"en": "Your finished jobs", "ru": "Ваши готовые задания"},
    "cmd.settings": {"en": "Defaults of this chat", "ru": "Настройки этого чата"},
    "cmd.status": {"en": "Is everything working?", "ru": "Всё ли работает?"},
    "cmd.stats": {"en": "Admin: usage statistics", "ru": "Админ: статистика"},
    "cmd.quota": {"en": "Admin: set a user's daily quota", "ru": "Админ: дневная квота"},
    "cmd.ban": {"en": "Admin: ban a user", "ru": "Админ: заблокировать"},
    "cmd.unban": {"en": "Admin: unban a user", "ru": "Админ: разблокировать"},
    "help.admin_title": {"en": "<b>Admin commands</b>", "ru": "<b>Команды администратора</b>"},
    # -- /start and /help ---------------------------------------------------------------------
    "start.welcome": {
        "en": "Hi {name}! I am <b>Anime Studio</b>: I draw your own anime characters, the same "
        "face every time, in any scene you describe.\n\n"
        "1. /newcharacter — describe a character (a reference photo helps)\n"
        "2. /image <i>@Name</i> reading in a rainy café — a picture\n"
        "3. /video <i>@Name</i> waving on a beach — a short clip\n\n"
        "/help lists everything.",
        "ru": "Привет, {name}! Я <b>Anime Studio</b>: рисую ваших аниме-персонажей — всегда с "
        "тем же лицом — в любой сцене, которую вы опишете.\n\n"
        "1. /newcharacter — опишите персонажа (фото-референс поможет)\n"
        "2. /image <i>@Имя</i> читает в дождливом кафе — картинка\n"
        "3. /video <i>@Имя</i> машет рукой на пляже — короткий ролик\n\n"
        "/help — все команды.",
    },
    "help.title": {"en": "<b>Commands</b>", "ru": "<b>Команды</b>"},
    "help.line": {"en": "/{command} — {description}", "ru": "/{command} — {description}"},
    "help.examples": {
        "en": "<b>Examples</b>\n"
        "<code>/image @Aiko reading in a rainy café --ar 16:9</code>\n"
        "<code>/image @Aiko and @Ren at a summer festival --seed 42</code>\n"
        "<code>/image a quiet mountain shrine at dawn --no people</code>\n"
        "<code>/video @Aiko waving on a beach --length 4s</code>\n"
        "Reply <code>/animate</code> to one of my pictures to bring it to life.\n\n"
        "<b>Options</b>: --ar 16:9, --seed N, --steps N, --cfg N, --no things to avoid, "
        "--length Ns (video).\n"
        "In groups, write commands as /image@{bot} or reply to my messages.",
        "ru": "<b>Примеры</b>\n"
        "<code>/image @Aiko читает в дождливом кафе --ar 16:9</code>\n"
        "<code>/image @Aiko и @Ren на летнем фестивале --seed 42</code>\n"
        "<code>/image тихий горный храм на рассвете --no people</code>\n"
        "<code>/video @Aiko машет рукой на пляже --length 4s</code>\n"
        "Ответьте <code>/animate</code> на мою картинку, чтобы её оживить.\n\n"
        "<b>Параметры</b>: --ar 16:9, --seed N, --steps N, --cfg N, --no чего избегать, "
        "--length Ns (видео).\n"
        "В группах пишите команды как /image@{bot} или отвечайте на мои сообщения.",
    },
    # -- /settings ------------------------------------------------------------------------------
    "settings.title": {
        "en": "<b>Settings of this chat</b>\n"
        "Style: <b>{style}</b>\nAspect ratio: <b>{aspect}</b>\n"
        "Video length: <b>{seconds} s</b>\nAlso send the original file: <b>{original}</b>",
        "ru": "<b>Настройки этого чата</b>\n"
        "Стиль: <b>{style}</b>\nСоотношение сторон: <b>{aspect}</b>\n"
        "Длина видео: <b>{seconds} с</b>\nОтправлять исходный файл: <b>{original}</b>",
    },
    "settings.readonly": {
        "en": "Only group admins can change these.",
        "ru": "Изменять их могут только администраторы группы.",
    },
    "settings.btn_style": {"en": "Style", "ru": "Стиль"},
    "settings.btn_aspect": {"en": "Aspect ratio", "ru": "Соотношение сторон"},
    "settings.btn_seconds": {"en": "Video length", "ru": "Длина видео"},
    "settings.btn_original": {"en": "Original file: {state}", "ru": "Исходный файл: {state}"},
    "settings.pick_style": {"en": "Choose the default style:", "ru": "Выберите стиль:"},
    "settings.pick_aspect": {
        "en": "Choose the default aspect ratio:",
        "ru": "Выберите соотношение сторон:",
    },
    "settings.pick_seconds": {
        "en": "Choose the default video length:",
        "ru": "Выберите длину видео:",
    },
    "settings.seconds_label": {"en": "{seconds} s", "ru": "{seconds} с"},
    "settings.saved": {"en": "Saved.", "ru": "Сохранено."},
    "settings.admins_only": {
        "en": "Only group admins can change the settings.",
        "ru": "Менять настройки могут только администраторы группы.",
    },
    # -- admin ----------------------------------------------------------------------------------
    "admin.only": {
        "en": "This command is only for the bot's admins.",
        "ru": "Эта команда только для администраторов бота.",
    },
    "admin.stats": {
        "en": "<b>Statistics</b>\nUsers: {users}\nJobs: {jobs}\nRunning per GPU server: {backends}"
        "\nLibrary: {library}",
        "ru": "<b>Статистика</b>\nПользователей: {users}\nЗаданий: {jobs}\nВыполняется на "
        "GPU-серверах: {backends}\nМедиатека: {library}",
    },
    "admin.none": {"en": "none", "ru": "нет"},
    # The parts of the library line of /stats (a part that is 0 is left out).
    "admin.library_off": {
        "en": "off (JELLYFIN_LIBRARY_DIR is not set)",
        "ru": "выключена (JELLYFIN_LIBRARY_DIR не задан)",
    },
    "admin.library_linked": {"en": "linked {count}", "ru": "со ссылкой {count}"},
    "admin.library_filed": {
        "en": "filed without a link {count}",
        "ru": "в папке без ссылки {count}",
    },
    "admin.library_waiting": {"en": "waiting {count}", "ru": "ждут {count}"},
    "admin.library_waiting_unreachable": {
        "en": "waiting {count} ({unreachable} of them: Jellyfin unreachable)",
        "ru": "ждут {count} (из них {unreachable}: Jellyfin недоступен)",
    },
    "admin.library_failed": {"en": "given up {count}", "ru": "не удалось {count}"},
    "admin.quota_usage": {
        "en": "Usage: <code>/quota &lt;user id or @username&gt; "
        "&lt;jobs per day | default&gt;</code>",
        "ru": "Формат: <code>/quota &lt;id или @username&gt; &lt;заданий в день | default&gt;"
        "</code>",
    },
    "admin.quota_bad_number": {
        "en": "The quota must be a whole number from 0 to 100000, or <code>default</code>.",
        "ru": "Квота — целое число от 0 до 100000 или <code>default</code>.",
    },
    "admin.quota_set": {
        "en": "Daily quota of {user} is now {quota}.",
        "ru": "Дневная квота {user} теперь {quota}.",
    },
    "admin.quota_default": {"en": "the default ({quota})", "ru": "по умолчанию ({quota})"},
    "admin.ban_usage": {
        "en": "Usage: <code>/{command} &lt;user id or @username&gt;</code>",
        "ru": "Формат: <code>/{command} &lt;id или @username&gt;</code>",
    },
    "admin.banned": {"en": "{user} is banned.", "ru": "{user} заблокирован."},
    "admin.unbanned": {"en": "{user} is no longer banned.", "ru": "{user} разблокирован."},
    "admin.unknown_user": {
        "en": "I have never seen {ref}: they must write to me first.",
        "ru": "Я не знаю {ref}: пользователь должен сначала написать мне.",
    },
    # -- jobs: /queue /cancel /history /status -------------------------------------------------
    "kind.image": {"en": "image", "ru": "картинка"},
    "kind.video": {"en": "video", "ru": "видео"},
    "state.queued": {"en": "waiting", "ru": "в очереди"},
    "state.submitted": {"en": "sent to a GPU", "ru": "отправлено на GPU"},
    "state.running": {"en": "generating", "ru": "генерируется"},
    "state.postprocessing": {"en": "finishing", "ru": "обработка"},
    "state.delivering": {"en": "sending", "ru": "отправка"},
    "state.done": {"en": "done", "ru": "готово"},
    "state.failed": {"en": "failed", "ru": "ошибка"},
    "state.cancelled": {"en": "cancelled", "ru": "отменено"},
    "eta.seconds": {"en": "~{n} s", "ru": "~{n} с"},
    "eta.minutes": {"en": "~{n} min", "ru": "~{n} мин"},
    "queue.empty": {
        "en": "You have no jobs waiting or running.",
        "ru": "У вас нет заданий в очереди.",
    },
    "queue.title": {"en": "<b>Your jobs</b>", "ru": "<b>Ваши задания</b>"},
    "queue.line": {
        "en": "<code>{id}</code> {kind}, {state}{where}: {prompt}",
        "ru": "<code>{id}</code> {kind}, {state}{where}: {prompt}",
    },
    "queue.position": {
        "en": " (#{position} in line, {eta})",
        "ru": " (№{position} в очереди, {eta})",
    },
    "queue.progress": {"en": " ({percent}%)", "ru": " ({percent}%)"},
    "queue.cancel_button": {"en": "Cancel {id}", "ru": "Отменить {id}"},
    "queue.cancel_hint": {
        "en": "Cancel one with <code>/cancel {example}</code> or the buttons.",
        "ru": "Отменить: <code>/cancel {example}</code> или кнопкой.",
    },
    "queue.cancel_usage": {
        "en": "Usage: <code>/cancel &lt;job id&gt;</code>; the first characters are enough "
        "(see /queue).",
        "ru": "Формат: <code>/cancel &lt;id задания&gt;</code>; достаточно первых символов "
        "(см. /queue).",
    },
    "queue.cancel_bad_id": {
        "en": "A job id is made of the characters 0-9 and a-f, like <code>3f2a</code>.",
        "ru": "Id задания состоит из символов 0-9 и a-f, например <code>3f2a</code>.",
    },
    "queue.cancel_not_found": {
        "en": "None of your waiting or running jobs starts with <code>{id}</code>. See /queue.",
        "ru": "Среди ваших активных заданий нет начинающегося с <code>{id}</code>. См. /queue.",
    },
    "queue.cancel_ambiguous": {
        "en": "Several of your jobs start with <code>{id}</code>: type more characters.",
        "ru": "С <code>{id}</code> начинаются несколько заданий: введите больше символов.",
    },
    "queue.cancelled": {
        "en": "Job <code>{id}</code> cancelled.",
        "ru": "Задание <code>{id}</code> отменено.",
    },
    "queue.cancelling": {
        "en": "Stopping job <code>{id}</code>…",
        "ru": "Останавливаю задание <code>{id}</code>…",
    },
    "history.empty": {
        "en": "You have no finished jobs yet.",
        "ru": "У вас пока нет готовых заданий.",
    },
    "history.title": {
        "en": "<b>Finished jobs</b>, page {page}",
        "ru": "<b>Готовые задания</b>, стр. {page}",
    },
    "history.line": {
        "en": "<code>{id}</code> {date} {kind}: {prompt}",
        "ru": "<code>{id}</code> {date} {kind}: {prompt}",
    },
    "status.checking": {"en": "Checking…", "ru": "Проверяю…"},
    "status.title": {"en": "<b>Status</b>", "ru": "<b>Состояние</b>"},
    "status.jobs": {
        "en": "Jobs now: {queued} waiting, {running} in progress",
        "ru": "Заданий сейчас: {queued} в очереди, {running} в работе",
    },
}

"""Telegram handlers, one module per feature; each exposes `register(app)`.

`COMMANDS` is the public command list (setMyCommands and /help), in display order, as
(command, text key of its description). `ADMIN_COMMANDS` are shown to ADMIN_USER_IDS only.
"""

from __future__ import annotations

COMMANDS: tuple[tuple[str, str], ...] = (
    ("start", "cmd.start"),
    ("help", "cmd.help"),
    ("newcharacter", "cmd.newcharacter"),
    ("characters", "cmd.characters"),
    ("image", "cmd.image"),
    ("video", "cmd.video"),
    ("animate", "cmd.animate"),
    ("queue", "cmd.queue"),
    ("cancel", "cmd.cancel"),
    ("history", "cmd.history"),
    ("settings", "cmd.settings"),
    ("status", "cmd.status"),
)

ADMIN_COMMANDS: tuple[tuple[str, str], ...] = (
    ("stats", "cmd.stats"),
    ("quota", "cmd.quota"),
    ("ban", "cmd.ban"),
    ("unban", "cmd.unban"),
)

"""Who may use the bot where (pure): ALLOWED_CHAT_IDS, bans and admins."""

from __future__ import annotations

from dataclasses import dataclass

from core.models import Role


@dataclass(frozen=True)
class AccessPolicy:
    allowed_chat_ids: frozenset[int]
    admin_user_ids: frozenset[int]

    def chat_allowed(self, chat_id: int) -> bool:
        return not self.allowed_chat_ids or chat_id in self.allowed_chat_ids

    def is_admin(self, user_id: int, role: Role | None = None) -> bool:
        return user_id in self.admin_user_ids or role is Role.ADMIN

    def user_allowed(self, user_id: int, role: Role | None) -> bool:
        return self.is_admin(user_id, role) or role is not Role.BANNED

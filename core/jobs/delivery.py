"""The delivery port: how a finished job's outputs reach the chat.

Core does not know Telegram: a process that can talk to the chat (the bot) registers a
`Deliverer`. Jobs in state `delivering` are taken by such a process, delivered once, their
message id recorded, and only then marked done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

from core.models import Generation, Output


@dataclass(frozen=True)
class DeliveredFile:
    output_id: UUID
    message_id: int
    file_id: str | None


@dataclass(frozen=True)
class DeliveryReceipt:
    """Where the result went. `message_id` None with an `error` means it could not be sent
    (e.g. the user blocked the bot): the job is still done and its outputs are kept."""

    message_id: int | None
    files: list[DeliveredFile] = field(default_factory=list)
    error: str | None = None


class Deliverer(Protocol):
    async def deliver(self, job: Generation, outputs: list[Output]) -> DeliveryReceipt:
        """Send the outputs; raise only for a retryable failure (the job stays delivering)."""
        ...

    async def library_linked(self, job: Generation, output: Output, link: str) -> None:
        """The output was filed in the media library: add the link to the delivered message."""
        ...

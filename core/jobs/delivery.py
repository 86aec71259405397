"""The delivery port: how a finished job's outputs reach the chat.

Core does not know Telegram: a process that can talk to the chat (the bot) registers a
`Deliverer`. Jobs in state `delivering` are taken by such a process and delivered once; only
then are they marked done.

Each message is recorded the moment the chat has accepted it (`DeliveryLedger.sent`), before
anything else is sent: a process killed after that point never sends the same file again. The
next process is handed the job with its `result_message_id` and the outputs' message ids filled
in, and sends only what is still missing.

A job finished by a runner of the delivering process is handed to the deliverer with the job
row and the outputs that runner has just saved (no read back); a delivery retried, adopted or
resumed after a restart reads them from the database. A deliverer may also implement
`DeliveryPreparer`: its `prepare(job)` is called once the job's prompt is in ComfyUI, so what
the result's message needs (e.g. the requester's language) is read while ComfyUI works, and
its `preload(job_id, files)` right before a handed-over delivery, with the contents of the
files just written (nothing is read back from disk).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
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
    (e.g. the user blocked the bot): the job is still done and its outputs are kept. The
    messages themselves are recorded through the `DeliveryLedger` as they are sent; `files`
    only lists them."""

    message_id: int | None
    files: list[DeliveredFile] = field(default_factory=list)
    error: str | None = None


class DeliveryLedger(Protocol):
    async def sent(self, file: DeliveredFile, *, main: bool) -> None:
        """Record one accepted message at once (`main`: the job's result message). Raises
        when it cannot be recorded; the deliverer then stops and the job is retried."""
        ...


class Deliverer(Protocol):
    async def deliver(
        self, job: Generation, outputs: list[Output], ledger: DeliveryLedger | None = None
    ) -> DeliveryReceipt:
        """Send what is not sent yet: the main result unless `job.result_message_id` is set,
        then each output without a `telegram_message_id`, reporting each message to `ledger`
        as soon as it is accepted. Raise only for a retryable failure (the job stays
        delivering)."""
        ...

    async def library_linked(self, job: Generation, output: Output, link: str) -> None:
        """The output was filed in the media library: add the link to the delivered message."""
        ...


@runtime_checkable
class DeliveryPreparer(Protocol):
    """What a deliverer may also do: get ready for a job's delivery before it starts."""

    def prepare(self, job: Generation) -> None:
        """`job`'s prompt is in ComfyUI and this process will probably deliver it: start
        reading what its delivery needs (in the background; never raises, never blocks). A
        delivery that finds nothing prepared reads it then."""
        ...

    def preload(self, job_id: UUID, files: Mapping[str, bytes]) -> None:
        """The contents of files of the job this process has just written (path -> bytes,
        e.g. the Telegram JPEG): its delivery, which starts next, sends them without reading
        them back (taken by that delivery only; a retry reads the files)."""
        ...


def primary_output(job: Generation, outputs: list[Output]) -> Output | None:
    """The output shown with the buttons: the first of the job's kind (else the first)."""
    ordered = sorted(outputs, key=lambda o: o.position)
    same = [o for o in ordered if o.kind is job.kind]
    chosen = same or ordered
    return chosen[0] if chosen else None


def unsent_outputs(job: Generation, outputs: list[Output]) -> list[Output]:
    """What a delivery of `job` still has to send: every output with no message yet, except
    the primary one once the job's result message is recorded."""
    primary = primary_output(job, outputs) if job.result_message_id is not None else None
    skipped = primary.id if primary is not None else None
    ordered = sorted(outputs, key=lambda o: o.position)
    return [o for o in ordered if o.telegram_message_id is None and o.id != skipped]


async def report_sent(ledger: DeliveryLedger | None, file: DeliveredFile, *, main: bool) -> None:
    if ledger is not None:
        await ledger.sent(file, main=main)

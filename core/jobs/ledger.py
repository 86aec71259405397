"""The store side of `DeliveryLedger`: each accepted message is written to PostgreSQL at once."""

from __future__ import annotations

from uuid import UUID

from core.db import outputs as out_db
from core.db.types import Executor
from core.errors import IllegalTransition
from core.jobs.delivery import DeliveredFile
from core.logs import get_logger

log = get_logger(__name__)


class StoreLedger:
    """Records the messages of one job's delivery as the deliverer reports them."""

    def __init__(self, db: Executor, job_id: UUID) -> None:
        self.db = db
        self.job_id = job_id

    async def sent(self, file: DeliveredFile, *, main: bool) -> None:
        if main:
            await self._record_main(file)
        else:
            await out_db.record_telegram(
                self.db, file.output_id, file_id=file.file_id, message_id=file.message_id
            )
        log.info(
            "delivery recorded",
            job_id=str(self.job_id),
            output_id=str(file.output_id),
            message_id=file.message_id,
            main=main,
        )

    async def _record_main(self, file: DeliveredFile) -> None:
        recorded = await out_db.record_main_delivery(
            self.db,
            self.job_id,
            file.output_id,
            message_id=file.message_id,
            file_id=file.file_id,
        )
        if not recorded:
            raise IllegalTransition(f"job {self.job_id} is not delivering")

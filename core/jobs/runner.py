"""One job on one backend: build the prompt, submit, track, fetch outputs, post-process.

The runner ends with the job `delivering` (then a process that talks to the chat delivers it),
`failed` with a short reason, `cancelled`, or back in `queued` when its backend was lost. It is
also how a job is resumed after a restart (`resume=True`): history is read before anything is
submitted again, so a job that finished meanwhile is completed, never run twice. A prompt still
in ComfyUI's queue sends its events to the client id it was submitted with (read from
`/queue`): the runner takes that id over with a guest socket, so its progress goes on.

An output node's `executed` event names its files before the prompt has finished: each is
downloaded and post-processed from then on, while ComfyUI finishes the prompt and its history is
read. The history stays the authority: work on a file it does not list at that place is waited
for and done again; nothing is saved before the job is `postprocessing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from core.comfy import protocol as p
from core.comfy.protocol import Event
from core.comfy.socket import ComfySocket
from core.db import generations as gen_db
from core.db import outputs as out_db
from core.errors import (
    AnimeBotError,
    ComfyUnavailable,
    ComfyValidationError,
    IllegalTransition,
    MediaError,
    describe,
)
from core.events import JobEvent
from core.jobs.backends import BackendHandle
from core.jobs.context import EngineContext
from core.jobs.postprocess import OutputSpec, process_output
from core.jobs.progress import ProgressModel
from core.logs import bind_context, clear_context, get_logger
from core.models import Generation, Output
from core.states import JobState
from core.workflows.patch import patch

log = get_logger(__name__)
T = TypeVar("T")

POLL_INTERVAL_S = 2.0  # /history polling while our prompt's events cannot reach us
SAFETY_POLL_S = 30.0  # while they can (the backend's WebSocket is up): a slow safety net
GUEST_CONNECT_S = 5.0  # taking over a previous process's client id: its socket's connect wait
HISTORY_RETRIES = 10
MAX_RESUBMITS = 2
PROGRESS_WRITE_INTERVAL_S = 1.0
CRASH_RETRIES = 2  # an unexpected error resumes the job this many times before it fails
DATABASE_CHECK_S = 5.0
DATABASE_RETRY_S = 1.0
_CONNECTION_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


class JobFailed(AnimeBotError):
    default_user_message = "The job failed."


class JobCancelled(AnimeBotError):
    pass


class BackendLost(AnimeBotError):
    pass


def duration_text(seconds: float) -> str:
    """A limit as people say it: "45 seconds", "1 minute", "10 minutes", "1.5 hours"."""
    if seconds < 120:
        value = max(1, round(seconds))
        return f"{value} second{'s' if value != 1 else ''}"
    if seconds < 2 * 3600:
        value = round(seconds / 60)
        return f"{value} minute{'s' if value != 1 else ''}"
    return f"{seconds / 3600:g} hours"


class JobRunner:
    def __init__(
        self, ctx: EngineContext, job: Generation, backend: BackendHandle, *, resume: bool = False
    ) -> None:
        self.ctx = ctx
        self.job = job
        self.backend = backend
        self.resume = resume
        self.pid = str(job.id)
        self.running_marked = job.status is JobState.RUNNING
        self.resubmits = 0
        # True once we submitted the prompt with our socket's client id, or follow the socket
        # of the client id a previous process submitted it with: its events come here.
        self.events_here = False
        self.events_socket: ComfySocket = backend.socket
        self.foreign_client: str | None = None  # client id of a previous process's prompt
        self.poll_first = False  # poll before waiting for events (they may have been missed)
        self._jitter = random.uniform(0.8, 1.2)  # runners do not all poll in the same second
        # The first write waits too: a job of a few seconds gets its bar from the transitions.
        self._last_progress_write = time.monotonic()
        # Outputs fetched and post-processed as their `executed` events came: index -> (file,
        # work), in the order the events named them.
        self._early: dict[int, tuple[p.OutputRef, asyncio.Task[OutputSpec]]] = {}

    async def run(self) -> None:
        bind_context(job_id=self.pid, backend=self.backend.url)
        crashes = 0
        try:
            while True:
                try:
                    await self._attempt()
                    return
                except asyncio.CancelledError:
                    log.info("runner stopped; the job is resumed on restart")
                    raise
                except Exception as error:
                    # Losing the database (a restart, a network cut) is not the job's fault: wait
                    # for it and resume (history first, never run twice). Anything else is
                    # resumed the same way a few times before the job fails.
                    lost = isinstance(error, _CONNECTION_ERRORS) or not await self._database_up()
                    if not lost:
                        crashes += 1
                        if crashes > CRASH_RETRIES:
                            log.exception("job crashed")
                            await self._end(
                                JobState.FAILED, f"Internal error ({type(error).__name__})."
                            )
                            return
                    log.warning(
                        "job interrupted, resuming it",
                        error=describe(error),
                        database_lost=lost,
                    )
                    if not await self._reload():
                        return
        finally:
            self.ctx.cancels.pop(self.job.id, None)
            clear_context(["job_id", "backend"])

    async def _attempt(self) -> None:
        try:
            await self._run()
        except JobCancelled:
            await self._end(JobState.CANCELLED, None)
        except (JobFailed, ComfyValidationError, MediaError) as error:
            log.warning("job failed", reason=error.user_message, detail=str(error))
            await self._end(JobState.FAILED, error.user_message)
        except BackendLost as error:
            log.warning("backend lost, job goes back to the queue", reason=str(error))
            await self._requeue(str(error))
        except IllegalTransition as error:
            log.info("job changed under us", detail=str(error))

    async def _database_up(self) -> bool:
        try:
            await asyncio.wait_for(self.ctx.db.fetchval("SELECT 1"), DATABASE_CHECK_S)
        except Exception:
            return False
        return True

    async def _reload(self) -> bool:
        """After an interruption: wait for the database, re-read the job and resume it. False
        when it is no longer this runner's (ended, requeued, or adopted by another process)."""
        while True:
            try:
                job = await gen_db.get_generation(self.ctx.db, self.job.id)
                break
            except Exception:
                await asyncio.sleep(DATABASE_RETRY_S)
        resumable = (JobState.SUBMITTED, JobState.RUNNING, JobState.POSTPROCESSING)
        if job is None or job.status not in resumable or job.lease_owner != self.ctx.owner:
            log.info("job not resumed here", status=job.status.value if job else None)
            return False
        self.job = job
        self.resume = True
        self.running_marked = job.status is JobState.RUNNING
        return True

    # -- phases ---------------------------------------------------------------------------

    async def _run(self) -> None:
        workflow = self.ctx.registry.get(self.job.workflow)
        prompt = await self._build_prompt(workflow)
        model = ProgressModel.for_prompt(prompt)
        queue = self.backend.socket.subscribe(self.pid)
        try:
            try:
                entry = await self._start_or_resume(prompt, queue)
                self._prepare_delivery()
                if entry is None:
                    queue = await self._follow_previous_process(queue)
                    entry = await self._track(prompt, queue, model)
            finally:
                self.backend.socket.unsubscribe(self.pid)
                await self._stop_following()
            await self._finish(entry)
        finally:
            await self._drop_early()

    def _prepare_delivery(self) -> None:
        """The prompt is in ComfyUI (or finished there): this process's delivery, if it has
        one, reads what the result's message needs now, not after ComfyUI finished."""
        if self.ctx.prepare_delivery is not None:
            self.ctx.prepare_delivery(self.job)

    async def _follow_previous_process(self, queue: asyncio.Queue[Event]) -> asyncio.Queue[Event]:
        """A resumed prompt sends its events to the client id it was submitted with: take that
        id over (a guest socket) so the progress goes on; poll once, since events sent before
        the guest connected are lost. Without a foreign client id: `queue`, unchanged."""
        client_id = self.foreign_client
        if client_id is None or client_id == self.backend.socket.client_id:
            return queue
        guest = await self.ctx.backends.guest_socket(self.backend.url, client_id)
        self.events_socket = guest
        guest_queue = guest.subscribe(self.pid)
        if await guest.wait_connected(GUEST_CONNECT_S):
            self.events_here = True
            log.info("following the resumed prompt's events")
        self.poll_first = True
        return guest_queue

    async def _stop_following(self) -> None:
        guest = self.events_socket
        if guest is self.backend.socket:
            return
        guest.unsubscribe(self.pid)
        self.events_socket = self.backend.socket
        await self.ctx.backends.release_guest(self.backend.url, guest.client_id)

    async def _build_prompt(self, workflow: Any) -> dict[str, Any]:
        params = {k: v for k, v in self.job.params.items() if k in workflow.params}
        if dropped := sorted(set(self.job.params) - set(params)):
            log.info("parameters the workflow does not take were left out", dropped=dropped)
        for key in ("reference_image", "input_image"):
            value = params.get(key)
            if isinstance(value, str) and value.startswith("/"):
                path = Path(value)
                if not await asyncio.to_thread(path.is_file):
                    raise JobFailed(
                        f"{key} {path} missing", user_message="The input image of this job is gone."
                    )
                params[key] = await self._upload(path, key)
        return patch(workflow, params, job_id=self.pid)

    async def _upload(self, path: Path, key: str) -> str:
        try:
            return await self.backend.client.upload_image(path, f"{self.pid}_{key}{path.suffix}")
        except ComfyUnavailable as error:
            self._unreachable(error)
            raise BackendLost(f"upload failed: {error}") from error

    async def _start_or_resume(
        self, prompt: dict[str, Any], queue: asyncio.Queue[Event]
    ) -> dict[str, Any] | None:
        """Submit, or on resume find the prompt first: returns its history when finished."""
        if self.resume:
            state = await self._where_is_prompt()
            if state == "finished":
                return await self._history()
            if state == "queued":
                log.info("re-attached to the prompt on its backend")
                return None
            if state == "unreachable":
                # Maybe only a blip: tracking polls it, and gives it backend_lost_after_s.
                log.info("backend unreachable on resume; waiting for it")
                return None
            log.info("prompt unknown to its backend, submitting again (same seed)")
        await self._submit(prompt)
        return None

    async def _where_is_prompt(self) -> str:
        try:
            if await self.backend.client.history(self.pid) is not None:
                return "finished"
            queued = await self.backend.client.queue()
            if self.pid in queued:
                self.foreign_client = queued.client_of(self.pid)
                return "queued"
            # It may have finished between the two reads.
            if await self.backend.client.history(self.pid) is not None:
                return "finished"
        except ComfyUnavailable as error:
            self._unreachable(error)
            return "unreachable"
        return "unknown"

    async def _submit(self, prompt: dict[str, Any]) -> None:
        try:
            await self.backend.client.submit(
                prompt, prompt_id=self.pid, client_id=self.backend.socket.client_id
            )
        except ComfyUnavailable as error:
            self._unreachable(error)
            raise BackendLost(f"submit failed: {error}") from error
        # Its events come to our own socket; a guest socket (if any) will not see them.
        self.events_here = self.events_socket is self.backend.socket
        log.info("prompt submitted")

    async def _track(
        self, prompt: dict[str, Any], queue: asyncio.Queue[Event], model: ProgressModel
    ) -> dict[str, Any]:
        started = self.job.submitted_at.timestamp() if self.job.submitted_at else time.time()
        deadline = started + self.ctx.timeout_for(self.job)
        cancel = self.ctx.cancel_event(self.job.id)
        last_poll = last_cancel_check = time.monotonic()
        if self.poll_first:
            last_poll -= POLL_INTERVAL_S + SAFETY_POLL_S
        while True:
            interval = self.poll_interval()
            # The NOTIFY sets `cancel` at once (and the orchestrator re-reads every flag when
            # its listening connection comes back); the database is read only now and then,
            # as a fallback (not once per WebSocket event: a busy engine gets thousands).
            recheck = time.monotonic() - last_cancel_check >= interval
            if recheck:
                last_cancel_check = time.monotonic()
            if cancel.is_set() or (recheck and await self._cancel_requested()):
                await self._cancel_in_backend()
                raise JobCancelled("cancelled")
            if time.time() > deadline:
                await self._cancel_in_backend()
                limit = duration_text(self.ctx.timeout_for(self.job))
                raise JobFailed(
                    "timeout", user_message=f"The job took longer than {limit} and was stopped."
                )
            wait = min(interval - (time.monotonic() - last_poll), deadline - time.time())
            event = await self._next_event(queue, cancel, max(0.0, wait))
            if event is not None:
                entry = await self._on_event(event, model)
                if entry is not None:
                    return entry
            if isinstance(event, p.Reconnected) or (
                time.monotonic() - last_poll >= self.poll_interval()
            ):
                last_poll = time.monotonic()
                entry = await self._poll(prompt)
                if entry is not None:
                    return entry

    def poll_interval(self) -> float:
        """How long tracking trusts the WebSocket before it reads `/history` itself.

        Our prompt's events come to the socket we follow while it is connected (ours, or the
        guest socket under the client id of the process that submitted it and died): then only
        a slow safety poll runs, and a reconnection (events may have been lost) polls at once.
        Otherwise, `POLL_INTERVAL_S`. A thousand prompts waiting in ComfyUI queues would
        otherwise cost a thousand `/history` + `/queue` reads every 2 s."""
        if self.events_here and self.events_socket.is_connected:
            return SAFETY_POLL_S * self._jitter
        return POLL_INTERVAL_S

    async def _next_event(
        self, queue: asyncio.Queue[Event], cancel: asyncio.Event, wait_s: float
    ) -> Event | None:
        if not queue.empty():  # a busy prompt: no waiting machinery per event
            return queue.get_nowait()
        get = asyncio.ensure_future(queue.get())
        stop = asyncio.ensure_future(cancel.wait())
        done, _ = await asyncio.wait(
            {get, stop}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
        )
        stop.cancel()
        if get in done:
            return get.result()
        get.cancel()
        return None

    async def _cancel_requested(self) -> bool:
        flag = await self.ctx.db.fetchval(
            "SELECT cancel_requested FROM generations WHERE id = $1", self.job.id
        )
        return bool(flag)

    async def _on_event(self, event: Event, model: ProgressModel) -> dict[str, Any] | None:
        if isinstance(event, p.ExecutionCached):
            model.cached(event.nodes)
        elif isinstance(event, p.ExecutionStart):
            await self._mark_running()
        elif isinstance(event, p.Executing):
            if event.finished:
                return await self._history()
            await self._mark_running()
            model.executing(event.node or "")
            await self._progress(model)
        elif isinstance(event, p.Progress):
            await self._mark_running()
            model.step(event.node, event.value, event.max, time.monotonic())
            await self._progress(model)
        elif isinstance(event, p.Executed):
            self._start_early(event)
            await asyncio.sleep(0)  # its download goes out before the next events are handled
        elif isinstance(event, p.Preview):
            self.ctx.events.publish(
                JobEvent(
                    job_id=self.job.id,
                    type="preview",
                    status=JobState.RUNNING.value,
                    chat_id=self.job.chat_id,
                    preview=event.data,
                    preview_mime=event.mime,
                )
            )
        elif isinstance(event, p.ExecutionError):
            raise JobFailed(
                f"execution_error: {event.exception_message}",
                user_message=p.execution_reason(event),
            )
        elif isinstance(event, p.ExecutionInterrupted):
            if await self._cancel_requested():
                raise JobCancelled("interrupted on request")
            raise JobFailed("interrupted", user_message="The GPU server interrupted the job.")
        return None

    async def _mark_running(self) -> None:
        if self.running_marked:
            return
        self.running_marked = True
        try:
            job = await gen_db.transition(
                self.ctx.db, self.job.id, JobState.RUNNING, expected=JobState.SUBMITTED
            )
        except IllegalTransition:
            return
        self.job = job
        self.ctx.publish_state(job)

    async def _progress(self, model: ProgressModel) -> None:
        snap = model.snapshot()
        self.ctx.events.publish(
            JobEvent(
                job_id=self.job.id,
                type="progress",
                status=JobState.RUNNING.value,
                chat_id=self.job.chat_id,
                percent=snap.percent,
                node=snap.node,
                step=snap.step,
                steps=snap.steps,
                eta_s=snap.eta_s,
            )
        )
        now = time.monotonic()
        if now - self._last_progress_write >= PROGRESS_WRITE_INTERVAL_S:
            self._last_progress_write = now
            await gen_db.set_progress(self.ctx.db, self.job.id, snap.percent / 100)

    async def _poll(self, prompt: dict[str, Any]) -> dict[str, Any] | None:
        """No events for a while (or the socket came back): ask the backend directly."""
        state = await self._where_is_prompt()
        if state == "finished":
            return await self._history()
        if state == "unreachable":
            down = self.backend.down_for(time.monotonic())
            if down >= self.ctx.settings.backend_lost_after_s:
                raise BackendLost(f"backend {self.backend.url} down for {down:.0f} s")
            return None
        if state == "unknown":
            if self.resubmits >= MAX_RESUBMITS:
                raise BackendLost("the backend keeps losing the prompt")
            self.resubmits += 1
            log.warning("backend lost the prompt, submitting again", attempt=self.resubmits)
            await self._submit(prompt)
        return None

    async def _history(self) -> dict[str, Any] | None:
        """The finished prompt's history; it can lag `executing{node:null}` by a moment.

        None when the backend cannot be reached right now: the caller keeps tracking, and the
        poll decides when the backend counts as lost (a blip never re-runs a finished job)."""
        for attempt in range(HISTORY_RETRIES):
            try:
                entry = await self.backend.client.history(self.pid)
            except ComfyUnavailable as error:
                self._unreachable(error)
                return None
            if entry is not None:
                return entry
            await asyncio.sleep(0.05 * (attempt + 1))
        raise BackendLost("the prompt finished but its history never appeared")

    async def _download(self, ref: p.OutputRef, out_dir: Path, name: str) -> Path | bytes:
        """Fetch one output: an image in memory, anything else to `out_dir/name`. A backend
        that is briefly unreachable gets `backend_lost_after_s` (the result exists only there:
        giving up fails the job)."""
        first_failure: float | None = None
        while True:
            try:
                if ref.kind == "image":
                    return await self.backend.client.fetch(ref)
                return await self.backend.client.download(ref, out_dir, name)
            except ComfyUnavailable as error:
                self._unreachable(error)
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                if now - first_failure >= self.ctx.settings.backend_lost_after_s:
                    raise BackendLost(f"download failed: {error}") from error
            await asyncio.sleep(POLL_INTERVAL_S)

    def _unreachable(self, error: Exception) -> None:
        self.ctx.backends.report_down(self.backend, str(error) or type(error).__name__)

    async def _cancel_in_backend(self) -> None:
        try:
            await self.backend.client.cancel(self.pid)
        except AnimeBotError as error:
            log.warning("could not cancel in the backend", error=str(error))

    async def _finish(self, entry: dict[str, Any]) -> None:
        """Fetch and post-process every output, save them, and move the job to `delivering`
        (the last output and the transition in one statement); then hand it to this process's
        delivery with its outputs, or leave it to whichever process delivers."""
        refs = await self._outputs_of(entry)
        out_dir = self.ctx.settings.outputs_dir / self.pid
        # The first output is downloaded and post-processed (or is already, since its
        # `executed` event) while `postprocessing` is being recorded: the statement's round
        # trip and commit are hidden; the job is in that state before anything is saved.
        first = asyncio.ensure_future(self._output(0, refs[0], out_dir))
        try:
            await self._enter_postprocessing()
        except BaseException:
            first.cancel()
            with contextlib.suppress(BaseException):
                await first
            raise
        specs = [await first]
        outputs: list[Output] = []
        for index in range(1, len(refs)):
            outputs.append(await self._save_output(index - 1, refs[index - 1], specs[-1]))
            specs.append(await self._output(index, refs[index], out_dir))
        self.job, last = await self._save_last_output(len(refs) - 1, refs[-1], specs[-1])
        outputs.append(last)
        files = {str(s.delivery_path): s.delivery_bytes for s in specs if s.delivery_bytes}
        # Handed off before the state event is published (both in this same step, so every
        # subscriber still sees `delivering` before `done`): the delivery's first step runs
        # before the progress message's handling of that event (the message is the delivery's
        # from then on).
        if self.ctx.hand_off is not None:
            self.ctx.hand_off(self.job, outputs, files)
        else:
            self.ctx.delivery_wakeup.set()
        self.ctx.publish_state(self.job)
        await asyncio.sleep(0)  # the delivery's request goes out before this is logged
        log.info("job ready for delivery", outputs=len(refs))

    async def _outputs_of(self, entry: dict[str, Any]) -> list[p.OutputRef]:
        """The image/video outputs of a finished prompt; raises when it did not succeed."""
        outcome = p.outcome_from_history(entry)
        if outcome.error is not None:
            raise JobFailed("execution_error", user_message=p.execution_reason(outcome.error))
        if outcome.status == "interrupted":
            if await self._cancel_requested():
                raise JobCancelled("interrupted")
            raise JobFailed("interrupted", user_message="The GPU server interrupted the job.")
        refs = p.kept_outputs(p.outputs_from_history(entry))
        if not refs:
            raise JobFailed("no outputs", user_message="The workflow produced no image or video.")
        return refs

    async def _enter_postprocessing(self) -> None:
        if self.job.status is JobState.POSTPROCESSING:
            return  # resumed while post-processing
        # ComfyUI's part is complete: the bar is full (never behind the last progress event).
        self.job = await gen_db.transition(
            self.ctx.db, self.job.id, JobState.POSTPROCESSING, progress=1.0
        )
        self.ctx.publish_state(self.job)

    def _start_early(self, event: p.Executed) -> None:
        """An output node finished: fetch and post-process its files now (see the module
        docstring), with the same filters as the history's outputs."""
        out_dir = self.ctx.settings.outputs_dir / self.pid
        for ref in p.kept_outputs(p.outputs_from_node_output(event.node, event.output)):
            index = len(self._early)
            work = asyncio.ensure_future(self._fetch_and_process(index, ref, out_dir))
            self._early[index] = (ref, work)

    async def _output(self, index: int, ref: p.OutputRef, out_dir: Path) -> OutputSpec:
        """Output `index` fetched and post-processed: by the work its `executed` event
        started, when that was the same file and it succeeded; else now."""
        early = self._early.pop(index, None)
        if early is not None:
            early_ref, work = early
            try:  # (waited for even when not used: it writes this index's files)
                spec = await work
            except JobCancelled:
                raise
            except Exception as error:
                log.info("early output work failed; doing it again", error=str(error))
            else:
                if early_ref == ref:
                    return spec
                log.info("the history lists another output here; doing it again", index=index)
        return await self._fetch_and_process(index, ref, out_dir)

    async def _drop_early(self) -> None:
        """Stop the early output work nobody used (the job ended otherwise, or the history
        listed fewer outputs) and remove the files of the work that was complete: no output
        row names them."""
        works = [work for _ref, work in self._early.values()]
        self._early = {}
        for work in works:
            work.cancel()
        unused: list[Path] = []
        for result in await asyncio.gather(*works, return_exceptions=True):
            if isinstance(result, OutputSpec):
                unused += [result.file_path, result.delivery_path]
                unused += [result.thumbnail_path] if result.thumbnail_path else []
        if unused:
            await asyncio.to_thread(_remove_files, unused)

    async def _fetch_and_process(self, index: int, ref: p.OutputRef, out_dir: Path) -> OutputSpec:
        """Download one output and post-process it (a cancel request stops it)."""
        source = await self._download(ref, out_dir, _download_name(index, ref))
        return await self._unless_cancelled(
            process_output(self.job, index, source, ref, out_dir, self.ctx.settings)
        )

    async def _save_output(self, index: int, ref: p.OutputRef, spec: OutputSpec) -> Output:
        return await out_db.save_output(self.ctx.db, **self._output_row(index, ref, spec))

    async def _save_last_output(
        self, index: int, ref: p.OutputRef, spec: OutputSpec
    ) -> tuple[Generation, Output]:
        """Save the last output and move the job POSTPROCESSING -> DELIVERING, in one
        statement, unless a cancel was requested: checked under the row lock, so a cancel that
        got in first always wins (never a result after "cancelled"). A process that delivers
        keeps the lease (the job is handed to its delivery)."""
        try:
            return await out_db.save_output_delivering(
                self.ctx.db,
                **self._output_row(index, ref, spec),
                keep_owner=self.ctx.hand_off is not None,
            )
        except gen_db.CancelRequested as error:
            raise JobCancelled("cancelled while post-processing") from error

    def _output_row(self, index: int, ref: p.OutputRef, spec: OutputSpec) -> dict[str, Any]:
        return {
            "generation_id": self.job.id,
            "position": index,
            "kind": spec.kind,
            "file_path": str(spec.file_path),
            "mime": spec.mime,
            "size_bytes": spec.size_bytes,
            "sha256": spec.sha256,
            "delivery_path": str(spec.delivery_path),
            "thumbnail_path": str(spec.thumbnail_path) if spec.thumbnail_path else None,
            "width": spec.width,
            "height": spec.height,
            "duration_s": spec.duration_s,
            "comfy_node": ref.node_id,
            "comfy_filename": ref.filename[:255],
            "library_enabled": self.ctx.settings.library_enabled,
            "without_music": spec.without_music,
        }

    async def _unless_cancelled(self, work: Coroutine[Any, Any, T]) -> T:
        """Run a post-processing step; a cancel request stops it (and its ffmpeg) at once."""
        cancel = self.ctx.cancel_event(self.job.id)
        if cancel.is_set():  # (a cancel whose NOTIFY was missed still wins at `delivering`)
            work.close()
            raise JobCancelled("cancelled while post-processing")
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(cancel.wait())
        try:
            done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if task in done:
            return task.result()
        raise JobCancelled("cancelled while post-processing")

    # -- endings ----------------------------------------------------------------------------

    async def _end(self, state: JobState, reason: str | None) -> None:
        try:
            job = await gen_db.transition(self.ctx.db, self.job.id, state, error=reason)
        except IllegalTransition as error:
            log.info("job already ended", detail=str(error))
            return
        self.ctx.publish_state(job, reason)
        log.info("job ended", status=state.value, reason=reason)

    async def _requeue(self, reason: str) -> None:
        try:  # (a cancel requested meanwhile wins: a queued job with one is never dispatched)
            job = await gen_db.transition(
                self.ctx.db,
                self.job.id,
                JobState.QUEUED,
                detail={"requeued": reason},
                unless_cancelled=True,
            )
        except gen_db.CancelRequested:
            await self._end(JobState.CANCELLED, None)
            return
        except IllegalTransition:
            # Lost while post-processing: the outputs on that backend are gone too.
            await self._end(
                JobState.FAILED, "The GPU server went away while the result was being fetched."
            )
            return
        self.ctx.events.publish(
            JobEvent(
                job_id=job.id,
                type="state",
                status="queued",
                chat_id=job.chat_id,
                message="waiting for a GPU server",
            )
        )


def _remove_files(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _download_name(index: int, ref: p.OutputRef) -> str:
    return f"{index:02d}_comfy{ref.extension or '.bin'}"

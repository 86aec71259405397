"""The job state machine (pure): which transitions are allowed, which states are final."""

from __future__ import annotations

from enum import StrEnum

from core.errors import IllegalTransition


class JobState(StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    RUNNING = "running"
    POSTPROCESSING = "postprocessing"
    DELIVERING = "delivering"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES

    @property
    def in_backend(self) -> bool:
        """The job occupies (or may occupy) a slot on its ComfyUI backend."""
        return self in (JobState.SUBMITTED, JobState.RUNNING)


FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})

_ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.SUBMITTED, JobState.FAILED, JobState.CANCELLED}),
    # A backend that is lost sends the job back to the queue (resubmitted with the same seed);
    # a fast job can finish before we saw it run.
    JobState.SUBMITTED: frozenset(
        {
            JobState.RUNNING,
            JobState.POSTPROCESSING,
            JobState.QUEUED,
            JobState.FAILED,
            JobState.CANCELLED,
        }
    ),
    JobState.RUNNING: frozenset(
        {JobState.POSTPROCESSING, JobState.QUEUED, JobState.FAILED, JobState.CANCELLED}
    ),
    JobState.POSTPROCESSING: frozenset({JobState.DELIVERING, JobState.FAILED, JobState.CANCELLED}),
    JobState.DELIVERING: frozenset({JobState.DONE, JobState.FAILED}),
    JobState.DONE: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}

CANCELLABLE = frozenset(
    {JobState.QUEUED, JobState.SUBMITTED, JobState.RUNNING, JobState.POSTPROCESSING}
)


def can_transition(current: JobState, target: JobState) -> bool:
    return target in _ALLOWED[current]


def check_transition(current: JobState, target: JobState) -> None:
    if not can_transition(current, target):
        raise IllegalTransition(f"illegal job transition {current.value} -> {target.value}")


def sources_of(target: JobState) -> frozenset[JobState]:
    """Every state from which `target` may be entered."""
    return frozenset(state for state, targets in _ALLOWED.items() if target in targets)

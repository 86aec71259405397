"""Queue ETA (pure): how long until a queued job starts and finishes."""

from __future__ import annotations

DEFAULT_JOB_SECONDS = {"image": 20.0, "video": 180.0}


def queue_eta(position: int, avg_job_s: float, capacity: int) -> float:
    """Seconds until a job at 1-based `position` finishes, with `capacity` parallel slots."""
    if position <= 0:
        return avg_job_s
    slots = max(1, capacity)
    rounds = (position - 1) // slots + 1
    return rounds * avg_job_s

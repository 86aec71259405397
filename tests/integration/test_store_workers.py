"""core.db.workers (and the orphan functions of core.db.generations) on a real PostgreSQL.

A process is alive while its connection holds a session advisory lock; when the connection
drops (clean exit, crash or kill -9) PostgreSQL releases the lock and everyone sees it at once.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from core.db import generations as gens
from core.db import people, workers
from core.db.pool import Database, connect
from core.models import ChatType, Generation, JobKind
from core.states import JobState

USER = 1
CHAT = -1
GPU = "http://gpu:8188"


async def _until_gone(db: Database, key: int) -> list[int]:
    """live_workers once `key` has left it (the server notices a dropped socket quickly)."""
    for _ in range(100):
        live = await workers.live_workers(db.pool)
        if key not in live:
            return live
        await asyncio.sleep(0.05)
    raise AssertionError(f"worker {key} still looks alive")


async def test_register_worker_lock_is_seen_from_other_connections(db: Database) -> None:
    assert await workers.live_workers(db.pool) == []
    a = await connect(db.dsn)
    b = await connect(db.dsn)
    c = await connect(db.dsn)
    try:
        key_a = await workers.register_worker(a, "run")
        key_b = await workers.register_worker(b, "worker")
        key_c = await workers.register_worker(c, "worker")
        assert len({key_a, key_b, key_c}) == 3
        assert all(k > 0 for k in (key_a, key_b, key_c))
        assert sorted(await workers.live_workers(db.pool)) == sorted([key_a, key_b, key_c])
        assert sorted(await workers.live_workers(a)) == sorted([key_a, key_b, key_c])

        row = await db.pool.fetchrow("SELECT * FROM workers WHERE key = $1", key_a)
        assert row is not None
        assert (row["role"], row["hostname"], row["pid"]) == (
            "run",
            socket.gethostname(),
            os.getpid(),
        )
        # The lock really is exclusive: nobody else can take the same key.
        got = await db.pool.fetchval("SELECT pg_try_advisory_lock(4242, $1)", key_a)
        assert got is False

        # A clean close releases the lock...
        await b.close()
        assert sorted(await _until_gone(db, key_b)) == sorted([key_a, key_c])
        # ...and so does a connection cut without goodbye, as after kill -9.
        c.terminate()
        assert await _until_gone(db, key_c) == [key_a]
        # Likewise when the server ends the session (the backend process is killed).
        pid_a = a.get_server_pid()
        assert await db.pool.fetchval("SELECT pg_terminate_backend($1)", pid_a) is True
        assert await _until_gone(db, key_a) == []
    finally:
        for conn in (a, b, c):
            if not conn.is_closed():
                conn.terminate()


async def test_heartbeat_and_forget_dead_workers(db: Database) -> None:
    a = await connect(db.dsn)
    b = await connect(db.dsn)
    try:
        key_a = await workers.register_worker(a, "run")
        key_b = await workers.register_worker(b, "worker")
        await db.pool.execute(
            "UPDATE workers SET heartbeat_at = now() - interval '1 hour' WHERE key = $1", key_a
        )
        before = await db.pool.fetchval("SELECT heartbeat_at FROM workers WHERE key = $1", key_a)
        await workers.heartbeat(db.pool, key_a)
        after = await db.pool.fetchval("SELECT heartbeat_at FROM workers WHERE key = $1", key_a)
        assert after - before > timedelta(minutes=59)
        await workers.heartbeat(db.pool, 999_999)  # unknown key: no error

        await b.close()
        live = await _until_gone(db, key_b)
        assert live == [key_a]
        assert await workers.forget_dead_workers(db.pool, live) == 1
        keys = [r["key"] for r in await db.pool.fetch("SELECT key FROM workers")]
        assert keys == [key_a]
        assert await workers.forget_dead_workers(db.pool, live) == 0
        assert await workers.forget_dead_workers(db.pool, []) == 1

        ghost = await connect(db.dsn)
        try:
            with pytest.raises(asyncpg.CheckViolationError):  # roles are 'run' and 'worker'
                await workers.register_worker(ghost, "ghost")
        finally:
            await ghost.close()
    finally:
        for conn in (a, b):
            if not conn.is_closed():
                await conn.close()


async def test_orphans_are_found_and_adopted_with_compare_and_set(db: Database) -> None:
    await people.upsert_user(db.pool, USER, first_name="U")
    await people.upsert_chat(db.pool, CHAT, ChatType.PRIVATE)

    async def job() -> Generation:
        job, _alone = await gens.create_queued(
            db.pool,
            id=uuid.uuid4(),
            requester_id=USER,
            chat_id=CHAT,
            kind=JobKind.IMAGE,
            prompt_typed="p",
            workflow="txt2img",
        )
        return job

    alive_conn = await connect(db.dsn)
    dying_conn = await connect(db.dsn)
    try:
        alive = await workers.register_worker(alive_conn, "run")
        dying = await workers.register_worker(dying_conn, "worker")

        mine = await job()
        theirs_submitted = await job()
        theirs_post = await job()
        theirs_done = await job()
        queued = await job()
        unowned = await job()
        for j, owner in (
            (mine, alive),
            (theirs_submitted, dying),
            (theirs_post, dying),
            (theirs_done, dying),
        ):
            assert await gens.claim(db.pool, j.id, backend=GPU, owner=owner, max_in_flight=10)
        await gens.transition(db.pool, theirs_post.id, JobState.POSTPROCESSING)
        for state in (JobState.POSTPROCESSING, JobState.DELIVERING):
            await gens.transition(db.pool, theirs_done.id, state)
        await gens.record_delivery(db.pool, theirs_done.id, result_message_id=1)
        await gens.transition(db.pool, theirs_done.id, JobState.DONE)
        await gens.transition(db.pool, unowned.id, JobState.SUBMITTED)  # no lease at all

        live = await workers.live_workers(db.pool)
        assert sorted(live) == sorted([alive, dying])
        orphans = await gens.list_orphans(db.pool, live)
        assert [o.id for o in orphans] == [unowned.id]

        dying_conn.terminate()  # the worker process is killed
        live = await _until_gone(db, dying)
        assert live == [alive]
        orphans = await gens.list_orphans(db.pool, live)
        assert [o.id for o in orphans] == [theirs_submitted.id, theirs_post.id, unowned.id]
        assert queued.id not in {o.id for o in orphans}
        everyone_dead = await gens.list_orphans(db.pool, [])
        assert {o.id for o in everyone_dead} == {
            mine.id,
            theirs_submitted.id,
            theirs_post.id,
            unowned.id,
        }

        # Two survivors race to adopt: only the first compare-and-set wins.
        assert await gens.adopt(db.pool, theirs_submitted.id, owner=alive, previous=dying)
        assert not await gens.adopt(db.pool, theirs_submitted.id, owner=12345, previous=dying)
        stored = await gens.require_generation(db.pool, theirs_submitted.id)
        assert stored.lease_owner == alive
        results = await asyncio.gather(
            *(gens.adopt(db.pool, theirs_post.id, owner=100 + i, previous=dying) for i in range(6))
        )
        assert results.count(True) == 1
        # A job without an owner is adopted with previous=None.
        assert not await gens.adopt(db.pool, unowned.id, owner=alive, previous=dying)
        assert await gens.adopt(db.pool, unowned.id, owner=alive, previous=None)
        # Final jobs are never adopted.
        assert not await gens.adopt(db.pool, theirs_done.id, owner=alive, previous=None)
        assert not await gens.adopt(db.pool, uuid.uuid4(), owner=alive, previous=None)

        orphans = await gens.list_orphans(db.pool, [alive])
        assert [o.id for o in orphans] == [theirs_post.id]  # adopted by a (dead) racer 100..105
        assert all(o.status is not JobState.QUEUED for o in orphans)
    finally:
        for conn in (alive_conn, dying_conn):
            if not conn.is_closed():
                await conn.close()


async def test_backends_save_and_list(db: Database) -> None:
    assert await workers.list_backends(db.pool) == []
    t1 = datetime(2030, 1, 1, tzinfo=UTC)
    t2 = t1 + timedelta(seconds=30)
    await workers.save_backend(
        db.pool,
        "http://b:8188",
        healthy=True,
        version="0.3.10",
        last_error=None,
        missing_workflows=[],
        checked_at=t1,
    )
    await workers.save_backend(
        db.pool,
        "http://a:8188",
        healthy=False,
        version=None,
        last_error="connection refused",
        missing_workflows=["wan_t2v", "upscale"],
        checked_at=t1,
    )
    listed = await workers.list_backends(db.pool)
    assert [b.url for b in listed] == ["http://a:8188", "http://b:8188"]
    a, b = listed
    assert (a.healthy, a.version, a.last_error) == (False, None, "connection refused")
    assert a.missing_workflows == ["wan_t2v", "upscale"]
    assert (b.healthy, b.version, b.last_error, b.missing_workflows) == (True, "0.3.10", None, [])
    assert b.checked_at == t1

    # An update replaces the health; an unknown version keeps the last known one.
    await workers.save_backend(
        db.pool,
        "http://b:8188",
        healthy=False,
        version=None,
        last_error="timeout",
        missing_workflows=["sheet"],
        checked_at=t2,
    )
    await workers.save_backend(
        db.pool,
        "http://a:8188",
        healthy=True,
        version="0.3.11",
        last_error=None,
        missing_workflows=[],
        checked_at=t2,
    )
    a, b = await workers.list_backends(db.pool)
    assert (b.healthy, b.version, b.last_error, b.missing_workflows, b.checked_at) == (
        False,
        "0.3.10",
        "timeout",
        ["sheet"],
        t2,
    )
    assert (a.healthy, a.version, a.last_error, a.missing_workflows) == (
        True,
        "0.3.11",
        None,
        [],
    )
    assert len(await workers.list_backends(db.pool)) == 2

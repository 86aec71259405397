"""The ComfyUI backends: one client + one WebSocket each, health, and node support per workflow."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp

from core.comfy.client import ComfyClient
from core.comfy.socket import ComfySocket
from core.db import workers as workers_db
from core.db.types import Executor
from core.errors import ComfyError
from core.logs import get_logger
from core.workflows.registry import Registry, check_against_object_info

log = get_logger(__name__)


@dataclass
class BackendHandle:
    url: str
    client: ComfyClient
    socket: ComfySocket
    healthy: bool = False
    version: str | None = None
    last_error: str | None = None
    down_since: float | None = None  # monotonic time it was first seen down
    missing: dict[str, list[str]] = field(default_factory=dict)  # workflow -> problems
    checked: bool = False

    def supports(self, workflow: str) -> bool:
        return workflow not in self.missing

    def down_for(self, now: float) -> float:
        return 0.0 if self.down_since is None else now - self.down_since

    def mark_down(self, error: str) -> bool:
        """A request to this backend just failed: route nothing new to it until a health check
        says it is back (else every job claimed meanwhile fails and is requeued, in a loop).
        Returns True when this changed its health."""
        was_healthy = self.healthy
        self.healthy = False
        self.last_error = error
        if self.down_since is None:
            self.down_since = time.monotonic()
        return was_healthy


class BackendPool:
    """All configured backends; `check_all()` refreshes health and node support."""

    def __init__(
        self, urls: list[str], registry: Registry, *, timeout_s: float, client_id: str | None = None
    ) -> None:
        self.registry = registry
        self.client_id = client_id or f"animebot-{uuid.uuid4().hex[:12]}"
        self._session: aiohttp.ClientSession | None = None
        self._timeout_s = timeout_s
        self._urls = urls
        self.handles: dict[str, BackendHandle] = {}
        self.changed = asyncio.Event()
        # Sockets under another process's client id (backend url, client id) -> (socket, users)
        self._guests: dict[tuple[str, str], tuple[ComfySocket, int]] = {}

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        for url in self._urls:
            client = ComfyClient(url, self._session, timeout_s=self._timeout_s)
            sock = ComfySocket(url, self.client_id, self._session)
            handle = BackendHandle(url, client, sock)
            self.handles[url] = handle
            sock.add_reconnect_callback(self.changed.set)
            await sock.start()

    async def close(self) -> None:
        for guest, _users in self._guests.values():
            await guest.close()
        self._guests.clear()
        for handle in self.handles.values():
            await handle.socket.close()
        if self._session is not None:
            await self._session.close()

    async def guest_socket(self, url: str, client_id: str) -> ComfySocket:
        """A socket under `client_id`, the id a process that died submitted its prompts with:
        ComfyUI sends a prompt's events to the socket of its client id, and lets a new
        connection take an id over. Shared by every runner following such a prompt; give it
        back with `release_guest`."""
        key = (url, client_id)
        sock, users = self._guests.get(key) or (ComfySocket(url, client_id, self._session), 0)
        self._guests[key] = (sock, users + 1)
        if users == 0:
            log.info("following a previous process's prompts", backend=url)
            await sock.start()
        return sock

    async def release_guest(self, url: str, client_id: str) -> None:
        key = (url, client_id)
        found = self._guests.get(key)
        if found is None:
            return
        sock, users = found
        if users > 1:
            self._guests[key] = (sock, users - 1)
            return
        del self._guests[key]
        await sock.close()

    def get(self, url: str) -> BackendHandle | None:
        return self.handles.get(url)

    def usable(self, workflow: str | None = None) -> list[BackendHandle]:
        return [
            h
            for h in self.handles.values()
            if h.healthy and (workflow is None or h.supports(workflow))
        ]

    def report_down(self, handle: BackendHandle, error: str) -> None:
        """Called by a runner whose request failed: mark it down, re-check it right away."""
        if handle.mark_down(error):
            log.warning("backend unreachable", backend=handle.url, error=error)
        self.changed.set()

    async def check(self, handle: BackendHandle) -> None:
        was_healthy = handle.healthy
        try:
            stats = await handle.client.system_stats()
            system = stats.get("system", {}) if isinstance(stats, dict) else {}
            handle.version = str(system.get("comfyui_version") or "") or handle.version
            if not handle.checked:
                info = await handle.client.object_info()
                handle.missing = {
                    wf.name: problems
                    for wf in self.registry
                    if (problems := check_against_object_info(wf, info))
                }
                handle.checked = True
                for name, problems in handle.missing.items():
                    log.warning(
                        "workflow not routed to backend",
                        backend=handle.url,
                        workflow=name,
                        problems=problems[:5],
                    )
            handle.healthy = True
            handle.last_error = None
            handle.down_since = None
        except (ComfyError, aiohttp.ClientError, OSError, TimeoutError) as error:
            handle.healthy = False
            handle.last_error = str(error) or type(error).__name__
            if handle.down_since is None:
                handle.down_since = time.monotonic()
        if handle.healthy != was_healthy:
            log.info(
                "backend health changed",
                backend=handle.url,
                healthy=handle.healthy,
                error=handle.last_error,
            )
            self.changed.set()

    async def check_all(self, db: Executor | None = None) -> None:
        await asyncio.gather(*(self.check(h) for h in self.handles.values()))
        if db is not None:
            now = datetime.now(UTC)
            for h in self.handles.values():
                await workers_db.save_backend(
                    db,
                    h.url,
                    healthy=h.healthy,
                    version=h.version,
                    last_error=h.last_error,
                    missing_workflows=sorted(h.missing),
                    checked_at=now,
                )

"""Client-side health checks (frp's `healthCheck.*`): a failing local service takes its
proxy off the server, and a recovered one puts it back.

One `HealthChecker` task per proxy that has a check. Every `intervalSeconds` it runs one
check bounded by `timeoutSeconds`: "tcp" connects to localIP:localPort; "http" sends
`GET path` (with `httpHeaders`) and wants a 2xx answer. After `maxFailed` failures in a row
the proxy is down; the first success brings it back up. As in frp, a checked proxy is only
registered on the server after its first successful check. A failure is thus noticed at most
intervalSeconds * maxFailed + timeoutSeconds after the service stopped answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from .proxyoptions import HealthCheckConfig

if TYPE_CHECKING:
    import aiohttp

logger = logging.getLogger(__name__)

MAX_REASON_CHARS: Final = 200


@dataclass(slots=True)
class HealthState:
    """What status pages show about one proxy's checks."""

    healthy: bool | None = None  # None until the first check finished
    failures: int = 0  # in a row
    checks: int = 0
    last_error: str = ""
    last_change: float = 0.0  # time.time() of the last up/down change


class HealthChecker:
    """Runs one proxy's checks; calls `on_change(name, healthy, reason)` on each change."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        config: HealthCheckConfig,
        on_change: Callable[[str, bool, str], None],
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.config = config
        self.on_change = on_change
        self.state = HealthState()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                error = await self.check_once()
                self._record(error)
                await asyncio.sleep(self.config.interval_s)
        finally:
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def check_once(self) -> str:
        """One check: "" if the service is healthy, else why not."""
        try:
            async with asyncio.timeout(self.config.timeout_s):
                if self.config.type == "tcp":
                    _, writer = await asyncio.open_connection(self.host, self.port)
                    writer.close()
                    with contextlib.suppress(ConnectionError, OSError):
                        await writer.wait_closed()
                    return ""
                return await self._http_check()
        except TimeoutError:
            return f"no answer within {self.config.timeout_s:g}s"
        except OSError as exc:
            return _reason(exc)

    async def _http_check(self) -> str:
        import aiohttp  # here: a client without http checks never loads it (a lighter start)

        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        host = f"[{self.host}]" if ":" in self.host else self.host
        url = f"http://{host}:{self.port}{self.config.path}"
        headers = dict(self.config.http_headers)
        try:
            async with self._session.get(url, headers=headers, allow_redirects=False) as response:
                if 200 <= response.status < 300:
                    return ""
                return f"GET {self.config.path} answered {response.status}"
        except aiohttp.ClientError as exc:
            if isinstance(exc, TimeoutError | OSError):
                raise  # check_once names these as it does for tcp checks
            return _reason(exc)

    def _record(self, error: str) -> None:
        state = self.state
        state.checks += 1
        if not error:
            state.failures = 0
            state.last_error = ""
            if state.healthy is not True:
                self._change(True, "health check passed")
            return
        state.failures += 1
        state.last_error = error
        if state.healthy is not False and state.failures >= self.config.max_failed:
            self._change(False, f"health check failed {state.failures} times: {error}")

    def _change(self, healthy: bool, reason: str) -> None:
        self.state.healthy = healthy
        self.state.last_change = time.time()
        self.on_change(self.name, healthy, reason)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def wait_closed(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)  # cancelled by close()
            self._task = None


class HealthMonitor:
    """The checkers of one client, by proxy name. Checkers added before `start()` (no event
    loop yet) start with it; `allows(name)` says whether a proxy may be registered."""

    def __init__(self, on_change: Callable[[str, bool, str], None]) -> None:
        self.on_change = on_change
        self.checkers: dict[str, HealthChecker] = {}
        self._started = False
        self._stopping: set[HealthChecker] = set()

    def add(self, name: str, host: str, port: int, config: HealthCheckConfig | None) -> None:
        self.remove(name)
        if config is None:
            return
        checker = HealthChecker(name, host, port, config, self.on_change)
        self.checkers[name] = checker
        if self._started:
            checker.start()

    def remove(self, name: str) -> None:
        checker = self.checkers.pop(name, None)
        if checker is not None:
            checker.close()
            self._stopping.add(checker)

    def start(self) -> None:
        self._started = True
        for checker in self.checkers.values():
            checker.start()

    def allows(self, name: str) -> bool:
        """True if the proxy has no check, or its last verdict was healthy."""
        checker = self.checkers.get(name)
        return checker is None or checker.state.healthy is True

    def state(self, name: str) -> HealthState | None:
        checker = self.checkers.get(name)
        return checker.state if checker is not None else None

    def close(self) -> None:
        for name in list(self.checkers):
            self.remove(name)

    async def wait_closed(self) -> None:
        stopping, self._stopping = self._stopping, set()
        await asyncio.gather(*(checker.wait_closed() for checker in stopping))


def _reason(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:MAX_REASON_CHARS]

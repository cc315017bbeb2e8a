"""Real processes under test: start them, follow their output line by line, stop them.

Theory of operation:
- `LoggedProcess` runs one program with stdout and stderr joined into a single pipe. It uses
  `loop.subprocess_exec` with its own `SubprocessProtocol`, so output is split into lines in
  the protocol callbacks (no reader task to own) and `close()` can always release the pipe,
  even when a grandchild (an sshd session, say) still holds it open.
- Only the last `MAX_LOG_LINES` lines stay in memory; with a `log_path`, every line also goes
  to that file until `MAX_LOG_FILE_BYTES` is reached. Tests wait on lines with `wait_for`,
  which wakes on each new line: there are no fixed sleeps anywhere.
- `TunnelProcess` adds the venv console scripts (`tunneld`, `tunnelc`) and parsers for the
  ready lines of docs/architecture.md. `ProcessGroup` owns many processes and stops them at
  teardown: SIGTERM, a deadline, then SIGKILL.
"""

# The `timeout` parameters below are this module's public API (the e2e tests call
# `wait_for(regex, timeout)`), and each is a deadline this module enforces itself.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Self

MAX_LOG_LINES: Final = 5000  # lines kept in memory per process; older lines are dropped
MAX_LINE_BYTES: Final = 16 * 1024  # longer lines are cut here and marked
MAX_LOG_FILE_BYTES: Final = 16 * 1024 * 1024  # per log file; later lines are not written
TAIL_LINES: Final = 40  # lines quoted in failure messages
DEFAULT_WAIT_S: Final = 15.0  # default deadline for a log line
TERM_TIMEOUT_S: Final = 10.0  # SIGTERM to exit, before SIGKILL
KILL_TIMEOUT_S: Final = 5.0  # SIGKILL to exit (a process in D state could outlive this)
EXIT_FLUSH_S: Final = 1.0  # after exit, how long the pipe may still deliver buffered output

TRUNCATED_MARK: Final = " [line truncated by test harness]"

# Ready lines (docs/architecture.md, "Ready lines"). `host` is greedy so that an IPv6
# address keeps its colons; the port is the last `:digits` before a space, "/" or line end.
_ADDR: Final = r"(?P<host>\S+):(?P<port>\d+)(?=[\s/]|$)"
CONTROL_READY: Final = re.compile(r"tunneld: ready: control on " + _ADDR)
HTTP_VHOST_READY: Final = re.compile(r"tunneld: ready: http vhost on " + _ADDR)
HTTPS_VHOST_READY: Final = re.compile(r"tunneld: ready: https vhost on " + _ADDR)
DASHBOARD_READY: Final = re.compile(r"tunneld: ready: dashboard on https?://" + _ADDR)
FINGERPRINT: Final = re.compile(r"tunneld: certificate fingerprint (?P<fingerprint>SHA256:\S+)")
CLIENT_LOGGED_IN: Final = re.compile(r"tunnelc: logged in to " + _ADDR + r" as (?P<client_id>\S+)")
INSPECTOR_READY: Final = re.compile(r"tunnelc: inspector on http://" + _ADDR)
ADMIN_READY: Final = re.compile(r"tunnelc: admin API on https?://" + _ADDR)


def _name_re(name: str | re.Pattern[str]) -> str:
    return name.pattern if isinstance(name, re.Pattern) else re.escape(name)


def oneliner_name(proxy_type: str, local_port: int) -> re.Pattern[str]:
    """A one-liner's default proxy name: TYPE-PORT-<6 hex digits of the stable client id>."""
    return re.compile(rf"{proxy_type}-{local_port}-[0-9a-f]{{6}}")


def proxy_ready_pattern(name: str | re.Pattern[str]) -> re.Pattern[str]:
    """The ready line of one client proxy (a name, or a pattern of names)."""
    return re.compile(
        rf"tunnelc: proxy (?P<name>{_name_re(name)}) ready at (?P<scheme>tcp|udp|https?|httpconnect)://"
        + _ADDR
    )


def proxy_refused_or_waiting_pattern(name: str | re.Pattern[str]) -> re.Pattern[str]:
    """A final refusal, or the first line of a proxy waiting for a stale session to expire."""
    return re.compile(
        rf"tunnelc: proxy {_name_re(name)} (?:refused|waiting for the stale session to expire "
        r"\(attempt \d+, next in [\d.]+s\)): (?P<reason>.*)$"
    )


def proxy_refused_pattern(name: str | re.Pattern[str]) -> re.Pattern[str]:
    """The line a client prints when the server refuses one of its proxies."""
    return re.compile(rf"tunnelc: proxy {_name_re(name)} refused: (?P<reason>.*)$")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An address parsed from a ready line."""

    scheme: str
    host: str
    port: int
    name: str = ""  # the proxy's name, for a proxy's ready line

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def _endpoint(match: re.Match[str], scheme: str) -> Endpoint:
    host = match["host"]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    name = match.groupdict().get("name") or ""
    return Endpoint(scheme, host, int(match["port"]), name)


class ProcessExitedError(AssertionError):
    """The process ended (or closed its output) before printing the awaited line."""


class LogWaitTimeoutError(AssertionError):
    """The awaited line did not appear before the deadline."""


class _Output(asyncio.SubprocessProtocol):
    """Splits the joined stdout/stderr pipe into lines; wakes waiters on every change."""

    def __init__(self, owner: LoggedProcess) -> None:
        self._owner = owner
        self._partial = bytearray()  # bounded by MAX_LINE_BYTES
        self._skipping = False  # inside the cut-off rest of an overlong line

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._partial += data
        *complete, rest = self._partial.split(b"\n")
        for raw in complete:
            if self._skipping:
                self._skipping = False
                continue
            self._owner._add_line(bytes(raw))
        if len(rest) > MAX_LINE_BYTES:
            if not self._skipping:
                self._owner._add_line(bytes(rest[:MAX_LINE_BYTES]), truncated=True)
                self._skipping = True
            rest = bytearray()
        self._partial = bytearray(rest)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if self._partial and not self._skipping:
            self._owner._add_line(bytes(self._partial))
        self._partial = bytearray()
        self._owner._output_closed()

    def process_exited(self) -> None:
        self._owner._process_exited()


class LoggedProcess:
    """One child process whose combined output tests can wait on."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path | None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._lines: collections.deque[tuple[int, str]] = collections.deque(maxlen=MAX_LOG_LINES)
        self._line_count = 0
        self._changed = asyncio.Event()
        self._output_eof = asyncio.Event()
        self._exited = asyncio.Event()
        self._transport: asyncio.SubprocessTransport | None = None
        self._log_file: IO[str] | None = None
        self._log_bytes = 0

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        name: str | None = None,
        netns: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
    ) -> Self:
        """Start `argv` (inside network namespace `netns` if given) and follow its output."""
        full = [*(["ip", "netns", "exec", netns] if netns else []), *argv]
        proc = cls(name or Path(argv[0]).name, full, log_path)
        await proc._spawn(env, cwd)
        return proc

    async def _spawn(self, env: Mapping[str, str] | None, cwd: Path | None) -> None:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("w", encoding="utf-8")
            self._log_file.write(f"$ {' '.join(self.argv)}\n")
        child_env = dict(os.environ)
        child_env["PYTHONUNBUFFERED"] = "1"
        child_env.update(env or {})
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: _Output(self),
                *self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=child_env,
                cwd=cwd,
                # Its own session: a Ctrl-C aimed at pytest must not reach the child before
                # the teardown's SIGTERM does.
                start_new_session=True,
            )
        except BaseException:
            self._close_log()
            raise
        self._transport = transport

    # -- callbacks from _Output -------------------------------------------------------------

    def _add_line(self, raw: bytes, *, truncated: bool = False) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        if truncated:
            text += TRUNCATED_MARK
        self._lines.append((self._line_count, text))
        self._line_count += 1
        if self._log_file is not None and self._log_bytes < MAX_LOG_FILE_BYTES:
            self._log_bytes += len(text) + 1
            self._log_file.write(text + "\n")
            self._log_file.flush()
        self._notify()

    def _output_closed(self) -> None:
        self._output_eof.set()
        self._notify()

    def _process_exited(self) -> None:
        self._exited.set()
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- queries ------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self._transport is not None
        return self._transport.get_pid()

    @property
    def returncode(self) -> int | None:
        """The exit code (negative for a signal), or None while running."""
        if self._transport is None:
            return None
        return self._transport.get_returncode()

    @property
    def line_count(self) -> int:
        """Lines seen so far; pass it as `since=` to wait only for lines printed after now."""
        return self._line_count

    def lines(self, since: int = 0) -> list[str]:
        """The retained lines with index >= since."""
        return [text for index, text in self._lines if index >= since]

    def tail(self, n: int = TAIL_LINES) -> str:
        lines = [text for _, text in self._lines][-n:]
        return "\n".join(f"  | {line}" for line in lines) or "  | (no output)"

    def describe(self) -> str:
        code = self.returncode
        state = "running" if code is None else f"exit code {code}"
        log = f", full log {self.log_path}" if self.log_path else ""
        return (
            f"{self.name} (pid {self.pid}, {state}{log}); last {TAIL_LINES} lines:\n{self.tail()}"
        )

    async def wait_for(
        self,
        pattern: str | re.Pattern[str],
        timeout: float = DEFAULT_WAIT_S,
        *,
        since: int = 0,
        fail_on: str | re.Pattern[str] | None = None,
    ) -> re.Match[str]:
        """Return the first match of `pattern` in a line with index >= since.

        Raises LogWaitTimeoutError after `timeout` seconds, ProcessExitedError when the process
        exits first, and AssertionError at once when a line matches `fail_on`.
        """
        regex = re.compile(pattern)
        failure = re.compile(fail_on) if fail_on is not None else None
        cursor = since
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changed
                    for index, text in self._lines:
                        if index < cursor:
                            continue
                        if failure is not None and failure.search(text):
                            raise AssertionError(
                                f"{self.name} printed {text!r} while waiting for "
                                f"/{regex.pattern}/: {self.describe()}"
                            )
                        if match := regex.search(text):
                            return match
                    cursor = self._line_count
                    if self._output_eof.is_set() or self._exited.is_set():
                        if not self._output_eof.is_set():
                            # The exit can be reported before the pipe's last bytes are read.
                            with contextlib.suppress(TimeoutError):
                                async with asyncio.timeout(EXIT_FLUSH_S):
                                    await self._output_eof.wait()
                            if self._line_count > cursor:
                                continue
                        await self._wait_exit(EXIT_FLUSH_S)
                        raise ProcessExitedError(
                            f"{self.name} stopped before printing /{regex.pattern}/: "
                            f"{self.describe()}"
                        )
                    await changed.wait()
        except TimeoutError:
            raise LogWaitTimeoutError(
                f"no line matching /{regex.pattern}/ from {self.name} within {timeout}s: "
                f"{self.describe()}"
            ) from None

    async def _wait_exit(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._exited.wait()
        return self._exited.is_set()

    async def wait(self, timeout: float = DEFAULT_WAIT_S) -> int:
        """Wait for the process to exit on its own and return its exit code."""
        if not await self._wait_exit(timeout):
            raise LogWaitTimeoutError(
                f"{self.name} still running after {timeout}s: {self.describe()}"
            )
        code = self.returncode
        assert code is not None
        return code

    # -- stopping -----------------------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        """Signal the process by its pid, unless it has already exited."""
        if self._transport is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # exited since the check
                self._transport.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the process (no-op once it has exited)."""
        self.send_signal(signal.SIGKILL)

    async def terminate(
        self, timeout: float = TERM_TIMEOUT_S, *, expect_exit_code: int | None = 0
    ) -> int:
        """SIGTERM, wait up to `timeout`, and check the exit code (None: accept any).

        A process that outlives the deadline is killed and reported as a failure.
        """
        self.send_signal(signal.SIGTERM)
        if not await self._wait_exit(timeout):
            self.kill()
            await self._wait_exit(KILL_TIMEOUT_S)
            description = self.describe()
            self.close()
            raise AssertionError(
                f"{self.name} ignored SIGTERM for {timeout}s and was killed: {description}"
            )
        code = self.returncode
        assert code is not None
        await self.wait_closed()
        if expect_exit_code is not None and code != expect_exit_code:
            raise AssertionError(
                f"{self.name} exited with code {code} after SIGTERM, expected "
                f"{expect_exit_code}: {self.describe()}"
            )
        return code

    def close(self) -> None:
        """Release the pipe and the log file; kills the process if it is still running."""
        if self._transport is not None:
            self._transport.close()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    async def wait_closed(self) -> None:
        """Wait (bounded) for exit and for the output pipe to drain, then close()."""
        await self._wait_exit(KILL_TIMEOUT_S)
        with contextlib.suppress(TimeoutError):
            # A grandchild may hold the pipe open; close() below cuts it off.
            async with asyncio.timeout(EXIT_FLUSH_S):
                await self._output_eof.wait()
        self.close()


def venv_script(program: str) -> Path:
    """The console script installed next to the running interpreter (the venv's bin dir)."""
    path = Path(sys.executable).parent / program
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: install the project into this venv with `pip install -e .`"
        )
    return path


class TunnelProcess(LoggedProcess):
    """A running `tunneld` or `tunnelc`, with parsers for its ready lines."""

    config_path: Path | None = None

    async def control_address(self, timeout: float = DEFAULT_WAIT_S) -> Endpoint:
        """Where tunneld accepts clients ("tunneld: ready: control on HOST:PORT")."""
        return _endpoint(await self.wait_for(CONTROL_READY, timeout), "tcp")

    async def http_vhost_address(self, timeout: float = DEFAULT_WAIT_S) -> Endpoint:
        return _endpoint(await self.wait_for(HTTP_VHOST_READY, timeout), "http")

    async def https_vhost_address(self, timeout: float = DEFAULT_WAIT_S) -> Endpoint:
        return _endpoint(await self.wait_for(HTTPS_VHOST_READY, timeout), "https")

    async def dashboard_address(self, timeout: float = DEFAULT_WAIT_S) -> Endpoint:
        return _endpoint(await self.wait_for(DASHBOARD_READY, timeout), "http")

    async def fingerprint(self, timeout: float = DEFAULT_WAIT_S) -> str:
        return (await self.wait_for(FINGERPRINT, timeout))["fingerprint"]

    async def proxy_endpoint(
        self, name: str | re.Pattern[str], timeout: float = DEFAULT_WAIT_S, *, since: int = 0
    ) -> Endpoint:
        """Where tunnelc's proxy `name` is reachable; fails at once if it was refused."""
        match = await self.wait_for(
            proxy_ready_pattern(name), timeout, since=since, fail_on=proxy_refused_pattern(name)
        )
        return _endpoint(match, match["scheme"])

    async def proxy_refusal(self, name: str, timeout: float = DEFAULT_WAIT_S) -> str:
        """The reason the server gave for refusing proxy `name`, for good or while another
        session holds what it asked for (the client then waits and asks again)."""
        return (await self.wait_for(proxy_refused_or_waiting_pattern(name), timeout))["reason"]


@dataclass(slots=True)
class _Member:
    process: LoggedProcess
    expect_exit_code: int | None


class ProcessGroup:
    """Owns processes started for one test and stops them all, newest first, at aclose().

    aclose() fails if a process ended with another code than its `expect_exit_code`.
    """

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir
        self._members: list[_Member] = []

    def _log_path(self, name: str) -> Path | None:
        if self.log_dir is None:
            return None
        return self.log_dir / f"{len(self._members):02d}-{name}.log"

    async def start(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        netns: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        expect_exit_code: int | None = 0,
    ) -> LoggedProcess:
        """Start any program, to be stopped at aclose().

        `expect_exit_code` is the code it must end with, on its own or by teardown's SIGTERM
        (None accepts any).
        """
        name = name or Path(argv[0]).name
        proc = await LoggedProcess.start(
            argv, name=name, netns=netns, env=env, cwd=cwd, log_path=self._log_path(name)
        )
        self._members.append(_Member(proc, expect_exit_code))
        return proc

    async def start_tunnel(
        self,
        program: str,
        args: Iterable[str],
        *,
        name: str | None = None,
        netns: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        expect_exit_code: int | None = 0,
    ) -> TunnelProcess:
        """Start the venv's `tunneld` or `tunnelc` console script."""
        name = name or program
        proc = await TunnelProcess.start(
            [str(venv_script(program)), *args],
            name=name,
            netns=netns,
            env=env,
            cwd=cwd,
            log_path=self._log_path(name),
        )
        self._members.append(_Member(proc, expect_exit_code))
        return proc

    async def aclose(self) -> None:
        """SIGTERM every live process (SIGKILL after the deadline); raise what went wrong."""
        failures: list[str] = []
        while self._members:
            member = self._members.pop()
            proc = member.process
            try:
                if proc.returncode is None:
                    await proc.terminate(expect_exit_code=member.expect_exit_code)
                else:
                    await proc.wait_closed()
                    expected = member.expect_exit_code
                    if expected is not None and proc.returncode != expected:
                        raise AssertionError(
                            f"{proc.name} exited on its own with code {proc.returncode}, "
                            f"expected {expected}: {proc.describe()}"
                        )
            except AssertionError as exc:
                failures.append(str(exc))
            finally:
                proc.close()
        if failures:
            raise AssertionError("teardown:\n" + "\n\n".join(failures))

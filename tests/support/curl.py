"""Run the real curl from tests, bounded in time, and keep what it printed."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Final

CURL: Final = "/usr/bin/curl"
CURL_TIMEOUT_S: Final = 15.0  # curl's own --max-time; the process gets 5 s more


@dataclass(frozen=True, slots=True)
class CurlResult:
    returncode: int
    stdout: bytes
    stderr: str
    elapsed_s: float


async def curl(*args: str, timeout_s: float = CURL_TIMEOUT_S) -> CurlResult:
    """Run curl to completion (bounded); the exit code is returned, not raised."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        CURL,
        "--silent",
        "--show-error",
        "--max-time",
        str(int(timeout_s)),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s + 5):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"curl did not finish: {args}") from None
    assert proc.returncode is not None
    return CurlResult(
        proc.returncode, out, err.decode(errors="replace"), time.monotonic() - started
    )


def resolve(name: str, port: int) -> list[str]:
    """curl options that send `name` to 127.0.0.1:port, as DNS would."""
    return ["--resolve", f"{name}:{port}:127.0.0.1"]

"""DNS-01 through an operator's script: `tls.acme.dnsHook` (no DNS provider is built in).

tunneld runs the script with three arguments and no shell:

    HOOK set   _acme-challenge.example.com  <TXT value>    # publish the record
    HOOK clear _acme-challenge.example.com  <TXT value>    # remove it after the order

`set` must return once the record is served by the zone's authoritative servers (the CA asks
right after), exit 0 on success, and print a reason on stderr otherwise. Each run is bounded
by DNS_HOOK_TIMEOUT_S. The script runs in the ACME worker thread, never on the event loop.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

DNS_HOOK_TIMEOUT_S: Final = 300.0  # DNS propagation can take minutes at some providers
MAX_REASON_CHARS: Final = 300


class DNSHookFailed(RuntimeError):
    """The hook exited non-zero, timed out or could not start; the message says which."""


def run_dns_hook(hook: Path, action: str, domain: str, value: str) -> None:
    """Run the hook once (blocking); raise DNSHookFailed with a one-line reason."""
    try:
        done = subprocess.run(
            [str(hook), action, domain, value],
            capture_output=True,
            timeout=DNS_HOOK_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DNSHookFailed(
            f"dnsHook {action} {domain} took over {DNS_HOOK_TIMEOUT_S:.0f} s"
        ) from None
    except OSError as exc:
        raise DNSHookFailed(f"dnsHook {hook} cannot run: {exc.strerror or exc}") from None
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
        reason = lines[-1][:MAX_REASON_CHARS] if lines else "no message"
        raise DNSHookFailed(f"dnsHook {action} {domain} exited {done.returncode}: {reason}")
    logger.info("tunneld: acme: dnsHook %s %s done", action, domain)

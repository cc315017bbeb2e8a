"""On-demand ACME certificates: policy, queue, rate limit, retries, renewal, status.

Theory of operation. A proxy that registers names calls `request(name)`:

- the name must pass the policy: one label under `subDomainHost` (a `subdomain` proxy), or a
  custom domain that `tls.acme.allowDomains` allows. Anything else is refused, once, with a
  reason the dashboard shows; the proxy itself still works over plain HTTP;
- a name with a valid certificate (loaded from the state directory at start, or issued
  since) is ready at once;
- otherwise the name is queued (at most MAX_QUEUED_NAMES; more are refused for now) and one
  worker task orders certificates one at a time in a thread (`ACMEAccount.order`).

The worker spends one token of an hourly budget (`maxOrdersPerHour`) per order. A failed
order is retried after a jittered exponential backoff (RETRY_BASE_S doubling up to
RETRY_MAX_S, times 0.5-1.5); an issued certificate is renewed at two thirds of its life
(plus up to RENEW_JITTER of its life, so a fleet started together does not renew together).

Files: `<stateDir>/acme/certs/<name>.crt` and `.key` (0600, directory 0700). `on_issued(name)`
tells the server, which updates the proxies' public URLs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from ..edge.certstore import CertificateError, CertStore
from ..edge.config import ACMEConfig
from .challenges import ChallengeBoard

logger = logging.getLogger(__name__)

MAX_QUEUED_NAMES: Final = 1000  # names waiting for an order
MAX_TRACKED_NAMES: Final = 10_000  # names with a status (ready, pending, failed, refused)
RETRY_BASE_S: Final = 5.0  # first retry after a failed order
RETRY_MAX_S: Final = 3600.0  # retries back off up to this
RENEW_AT: Final = 2 / 3  # of a certificate's life
RENEW_JITTER: Final = 0.05  # of a certificate's life, added at random
HOUR_S: Final = 3600.0


@dataclass(slots=True)
class NameStatus:
    """What the dashboard shows for one name."""

    state: str  # "ready", "pending", "failed", "refused"
    detail: str = ""
    not_after: datetime | None = None
    failures: int = 0  # consecutive failed orders
    next_attempt: float | None = None  # loop time of the next order or renewal


def _file_stem(name: str) -> str:
    """`*.example.com` is kept as `_wildcard.example.com` (no `*` in file names)."""
    return "_wildcard" + name[1:] if name.startswith("*.") else name


def _name_of(stem: str) -> str:
    return "*" + stem[len("_wildcard") :] if stem.startswith("_wildcard.") else stem


class CertManager:
    """See the module docstring. `start()`, then `close()` + `wait_closed()`."""

    def __init__(
        self,
        config: ACMEConfig,
        state_dir: Path,
        certs: CertStore,
        board: ChallengeBoard,
        *,
        sub_domain_host: str | None,
        on_issued: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._dir = state_dir / "acme"
        self._certs = certs
        self._sub_domain_host = sub_domain_host
        self._on_issued = on_issued
        from .account import ACMEAccount  # the acme library loads with ACME (a lighter start)

        self._account = ACMEAccount(config, self._dir, board)
        self._queue: asyncio.Queue[str] = asyncio.Queue(MAX_QUEUED_NAMES)
        self._queued: set[str] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.status: dict[str, NameStatus] = {}
        self._orders_this_hour: list[float] = []  # monotonic times of recent orders
        self._worker: asyncio.Task[None] | None = None
        self.orders_total = 0
        self.failures_total = 0
        self.refused_total = 0

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Load the certificates kept from earlier runs, then start the worker."""
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self._dir / "certs").mkdir(mode=0o700, exist_ok=True)
        for cert_file in sorted((self._dir / "certs").glob("*.crt")):
            name = _name_of(cert_file.stem)
            try:
                entry = self._certs.load(cert_file, cert_file.with_suffix(".key"), source="acme")
            except CertificateError as exc:
                logger.warning("tunneld: acme: ignoring a kept certificate: %s", exc)
                continue
            self._issued(name, entry.not_before, entry.not_after, announce=False)
        self._worker = asyncio.get_running_loop().create_task(self._work())
        wildcard = self._wildcard
        if wildcard is not None and wildcard not in self.status:
            self._set(wildcard, NameStatus("pending", "waiting for the CA (DNS-01)"))
            self._enqueue(wildcard)

    def close(self) -> None:
        self._account.stop.set()
        if self._worker is not None:
            self._worker.cancel()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    async def wait_closed(self) -> None:
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)

    # -- requests from proxies ---------------------------------------------------------------

    @property
    def _wildcard(self) -> str | None:
        """`*.subDomainHost` when tls.acme.dnsHook can order it, else None."""
        sdh = self._sub_domain_host
        return f"*.{sdh}" if sdh is not None and self._config.dns_hook is not None else None

    def allowed(self, name: str) -> str | None:
        """None if the policy lets us order a certificate for `name`, else why not."""
        sdh = self._sub_domain_host
        if name == self._wildcard:
            return None
        if name.startswith("*."):
            return "wildcard names need DNS-01, which tls.acme does not do on demand"
        if sdh is not None and name.endswith("." + sdh):
            if "." in name[: -len(sdh) - 1]:
                return f"only one label under subDomainHost {sdh!r} gets a certificate"
            return None
        if self._config.allows_custom(name):
            return None
        return "the custom domain is not in tls.acme.allowDomains"

    def request(self, name: str) -> NameStatus:
        """Ask for a certificate for `name`; returns its status now (see the docstring)."""
        known = self.status.get(name)
        if known is not None and known.state in ("ready", "pending"):
            return known
        if known is not None and known.state == "failed":
            return known  # its retry is scheduled
        wildcard = self._wildcard
        if (
            wildcard is not None
            and name != wildcard
            and name.endswith(wildcard[1:])
            and self.allowed(name) is None
        ):
            # one DNS-01 wildcard covers every subdomain: no order per name
            return self.status.get(wildcard) or self.request(wildcard)
        reason = self.allowed(name)
        if reason is not None:
            self.refused_total += 1
            logger.info("tunneld: acme: no certificate for %s: %s", name, reason)
            return self._set(name, NameStatus("refused", reason))
        status = self._set(name, NameStatus("pending", "waiting for the CA"))
        self._enqueue(name)
        return status

    def _set(self, name: str, status: NameStatus) -> NameStatus:
        if name not in self.status and len(self.status) >= MAX_TRACKED_NAMES:
            # forget the oldest refusal to make room; ready names are never dropped
            for old, st in self.status.items():
                if st.state == "refused":
                    del self.status[old]
                    break
        self.status[name] = status
        return status

    def _enqueue(self, name: str) -> None:
        if name in self._queued:
            return
        try:
            self._queue.put_nowait(name)
        except asyncio.QueueFull:
            self._failed(name, f"{MAX_QUEUED_NAMES} names are waiting for the CA already")
            return
        self._queued.add(name)

    # -- the worker --------------------------------------------------------------------------

    async def _work(self) -> None:
        from .account import OrderFailed, write_private  # loaded with the account

        while True:
            name = await self._queue.get()
            self._queued.discard(name)
            wait = self._budget_wait()
            if wait > 0:
                self._failed(
                    name,
                    f"rate limit: {self._config.max_orders_per_hour} orders per hour",
                    retry_in=wait,
                )
                continue
            self._orders_this_hour.append(time.monotonic())
            self.orders_total += 1
            logger.info("tunneld: acme: ordering a certificate for %s", name)
            try:
                issued = await asyncio.to_thread(self._account.order, name)
            except OrderFailed as exc:
                self._failed(name, str(exc))
                continue
            except Exception as exc:  # a bug in us or in acme: keep the worker alive
                logger.exception("tunneld: acme: order for %s failed unexpectedly", name)
                self._failed(name, f"internal error: {exc!r}")
                continue
            cert_file = self._dir / "certs" / f"{_file_stem(name)}.crt"
            write_private(cert_file.with_suffix(".key"), issued.key_pem)
            write_private(cert_file, issued.fullchain_pem)
            try:
                entry = self._certs.load(cert_file, cert_file.with_suffix(".key"), source="acme")
            except CertificateError as exc:
                self._failed(name, f"the CA's certificate is unusable: {exc}")
                continue
            self._issued(name, entry.not_before, entry.not_after, announce=True)

    def _budget_wait(self) -> float:
        """Seconds until an order fits the hourly budget (0 = now)."""
        now = time.monotonic()
        recent = [t for t in self._orders_this_hour if now - t < HOUR_S]
        self._orders_this_hour = recent
        if len(recent) < self._config.max_orders_per_hour:
            return 0.0
        return HOUR_S - (now - recent[0])

    def _issued(
        self, name: str, not_before: datetime, not_after: datetime, *, announce: bool
    ) -> None:
        life = (not_after - not_before).total_seconds()
        renew_at = not_before.timestamp() + life * (RENEW_AT + random.uniform(0, RENEW_JITTER))
        delay = max(0.0, renew_at - datetime.now(UTC).timestamp())
        status = self._set(name, NameStatus("ready", "", not_after))
        self._schedule(name, delay, status)
        logger.info(
            "tunneld: acme: certificate for %s valid until %s; renewal in %.0f s",
            name,
            not_after.strftime("%Y-%m-%d %H:%M:%S UTC"),
            delay,
        )
        if announce and self._on_issued is not None:
            self._on_issued(name)

    def _failed(self, name: str, reason: str, retry_in: float | None = None) -> None:
        previous = self.status.get(name)
        failures = (previous.failures if previous is not None else 0) + 1
        self.failures_total += 1
        if retry_in is None:
            backoff = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (failures - 1))
            retry_in = backoff * random.uniform(0.5, 1.5)
        still_valid = previous is not None and previous.state == "ready"
        logger.warning(
            "tunneld: acme: certificate for %s failed (attempt %d): %s; retry in %.0f s",
            name,
            failures,
            reason,
            retry_in,
        )
        status = NameStatus(
            "ready" if still_valid else "failed",
            reason,
            previous.not_after if previous is not None else None,
            failures,
        )
        self._set(name, status)
        self._schedule(name, retry_in, status)

    def _schedule(self, name: str, delay: float, status: NameStatus) -> None:
        loop = asyncio.get_running_loop()
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        status.next_attempt = loop.time() + delay
        self._timers[name] = loop.call_later(delay, self._due, name)

    def _due(self, name: str) -> None:
        self._timers.pop(name, None)
        status = self.status.get(name)
        if status is not None and status.state == "failed":
            status.detail = f"retrying after: {status.detail}"
        self._enqueue(name)

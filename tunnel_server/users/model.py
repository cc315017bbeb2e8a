"""What the user store holds: a user record and its quota, and their text forms.

Quotas are stored as one JSON object per user so that adding a quota never needs a schema
migration. Every limit has "0 / empty = no limit of this kind" semantics, except
`custom_domains`, which is an allowlist: a store user may use no custom domain unless one of
its patterns matches (an operator hands out domains; subdomains under subDomainHost are free
unless `subdomains` narrows them).
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from tunnel_common.bandwidth import format_bandwidth, parse_bandwidth

USER_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MAX_PATTERNS: Final = 64  # per list in one quota
MAX_PATTERN_CHARS: Final = 253
_SIZE_RE: Final = re.compile(r"(\d+)\s*([KMGT]i?B?|B)?", re.IGNORECASE)
_PORT_RE: Final = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?")


class UserError(ValueError):
    """A bad user name, quota value or store operation; the message is one line for users."""


def check_user_name(name: str) -> str:
    if not USER_NAME_RE.fullmatch(name):
        raise UserError(
            f"invalid user name {name!r}: use 1 to 64 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Quota:
    """One user's limits; 0 or an empty tuple means "no limit of this kind"."""

    max_proxies: int = 0
    max_connections: int = 0  # concurrent visitor connections over all the user's proxies
    max_ports: int = 0  # public tcp/udp ports held at once
    ports: tuple[tuple[int, int], ...] = ()  # inclusive ranges the user may ask for
    subdomains: tuple[str, ...] = ()  # glob patterns for `subdomain` (under subDomainHost)
    custom_domains: tuple[str, ...] = ()  # allowlist of glob patterns; empty = none allowed
    bytes_per_day: int = 0  # both directions, UTC day
    bytes_per_month: int = 0  # both directions, UTC month
    bandwidth: int = 0  # bytes per second over all the user's proxies, both directions

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Quota:
        raw: dict[str, Any] = json.loads(text) if text else {}
        return cls(
            max_proxies=int(raw.get("max_proxies", 0)),
            max_connections=int(raw.get("max_connections", 0)),
            max_ports=int(raw.get("max_ports", 0)),
            ports=tuple((int(a), int(b)) for a, b in raw.get("ports", ())),
            subdomains=tuple(str(p) for p in raw.get("subdomains", ())),
            custom_domains=tuple(str(p) for p in raw.get("custom_domains", ())),
            bytes_per_day=int(raw.get("bytes_per_day", 0)),
            bytes_per_month=int(raw.get("bytes_per_month", 0)),
            bandwidth=int(raw.get("bandwidth", 0)),
        )

    def allows_port(self, port: int) -> bool:
        return not self.ports or any(a <= port <= b for a, b in self.ports)

    def allows_subdomain(self, label: str) -> bool:
        return not self.subdomains or any(fnmatch.fnmatchcase(label, p) for p in self.subdomains)

    def allows_custom_domain(self, domain: str) -> bool:
        return any(fnmatch.fnmatchcase(domain, p) for p in self.custom_domains)

    def describe(self) -> str:
        """One line for `tunneld users list`."""
        parts = []
        if self.max_proxies:
            parts.append(f"proxies<={self.max_proxies}")
        if self.max_connections:
            parts.append(f"conns<={self.max_connections}")
        if self.max_ports:
            parts.append(f"ports<={self.max_ports}")
        if self.ports:
            parts.append("ports=" + format_ports(self.ports))
        if self.subdomains:
            parts.append("subdomains=" + ",".join(self.subdomains))
        if self.custom_domains:
            parts.append("customDomains=" + ",".join(self.custom_domains))
        if self.bytes_per_day:
            parts.append("day=" + format_size(self.bytes_per_day))
        if self.bytes_per_month:
            parts.append("month=" + format_size(self.bytes_per_month))
        if self.bandwidth:
            parts.append("bandwidth=" + format_bandwidth(self.bandwidth))
        return " ".join(parts) or "-"


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    login_key: str = field(repr=False)  # hex; see protocol/userkey.py
    enabled: bool
    quota: Quota
    created: float
    last_seen: float | None


def parse_size(text: str) -> int:
    """'0', '500M', '10G', '2GiB' -> bytes (decimal K/M/G/T; the 'i' forms are binary)."""
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise UserError(f"invalid size {text!r}: use a number with an optional K, M, G or T")
    number, unit = int(match.group(1)), (match.group(2) or "").upper()
    base = 1024 if "I" in unit else 1000
    exponent = "_KMGT".find(unit[:1]) if unit[:1] in "KMGT" and unit else 0
    factor: int = base ** max(exponent, 0)
    return number * factor


def parse_user_bandwidth(text: str) -> int:
    """'1MB', '512KB' (frp's bandwidthLimit syntax, per second) -> bytes per second; '0' or ''
    -> 0 (no limit)."""
    if text.strip() in ("", "0"):
        return 0
    try:
        return parse_bandwidth(text)
    except ValueError as exc:
        raise UserError(f"invalid bandwidth {text!r}: {exc}") from None


def format_size(n: int) -> str:
    for unit, factor in (("T", 1000**4), ("G", 1000**3), ("M", 1000**2), ("K", 1000)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def parse_ports(text: str) -> tuple[tuple[int, int], ...]:
    """'6000-6010,7000' -> ((6000, 6010), (7000, 7000)); '' -> () (no restriction)."""
    ranges: list[tuple[int, int]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _PORT_RE.fullmatch(part)
        if match is None:
            raise UserError(f"invalid port range {part!r}: use N or N-M, comma-separated")
        start = int(match.group(1))
        end = int(match.group(2) or start)
        if not 1 <= start <= end <= 65535:
            raise UserError(f"invalid port range {part!r}: ports are 1 to 65535, start <= end")
        ranges.append((start, end))
    if len(ranges) > MAX_PATTERNS:
        raise UserError(f"too many port ranges (limit {MAX_PATTERNS})")
    return tuple(ranges)


def format_ports(ranges: tuple[tuple[int, int], ...]) -> str:
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def parse_patterns(text: str) -> tuple[str, ...]:
    """'alice,alice-*' -> ('alice', 'alice-*'); lower-cased domain globs."""
    patterns = tuple(p.strip().lower() for p in text.split(",") if p.strip())
    if len(patterns) > MAX_PATTERNS:
        raise UserError(f"too many patterns (limit {MAX_PATTERNS})")
    for pattern in patterns:
        if len(pattern) > MAX_PATTERN_CHARS or not re.fullmatch(r"[a-z0-9*?.\-]+", pattern):
            raise UserError(
                f"invalid domain pattern {pattern!r}: use letters, digits, '-', '.', '*', '?'"
            )
    return patterns

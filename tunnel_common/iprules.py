"""IP rules: `allowIPs` / `denyIPs` CIDR lists, on the server and on each client proxy.

A source address is refused if it is in any `denyIPs` network, or if `allowIPs` is not empty
and it is in none of them (deny wins over allow). A bare address is a /32 (or /128).
IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are checked as the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

MAX_RULES: Final = 1024  # entries per list; rules are checked linearly per connection

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """Parse CIDR entries; ValueError names the first bad one."""
    if len(entries) > MAX_RULES:
        raise ValueError(f"at most {MAX_RULES} entries, got {len(entries)}")
    networks: list[Network] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(
                f'"{entry}" is not an IP address or CIDR network (e.g. "10.0.0.0/8")'
            ) from None
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class IPRules:
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, allow: Sequence[str], deny: Sequence[str]) -> IPRules:
        return cls(parse_networks(allow), parse_networks(deny))

    @property
    def empty(self) -> bool:
        return not self.allow and not self.deny

    def permits(self, ip: str) -> bool:
        """True if a visitor from `ip` may connect. An unparsable address is refused when any
        rule is set (it cannot be shown to be allowed)."""
        if self.empty:
            return True
        try:
            address = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self.deny):
            return False
        return not self.allow or any(address in net for net in self.allow)

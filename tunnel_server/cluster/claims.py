"""Cluster claims in Redis: who owns a domain, a location or a port, as atomic Lua scripts.

A claim is one Redis string `{prefix}claim:{kind}:{name}` whose value is the owner as JSON
(`node`, `user`, `client`) and whose TTL is the lease. The node that holds a client's control
connection owns that client's claims and refreshes their leases; if the node dies, Redis
expires them and the names are free again within one lease.

Every change is made by one script, so that two nodes racing for the same name can never both
win, and a multi-name claim (a proxy with several domains) is all or nothing. Each script also
publishes the change on the routes channel, so every node's cache follows it.

The rules match a single tunneld's (docs/cluster.md):
- a free name goes to the claimant;
- a name held by the same user's same client id goes to the claimant at once: the client
  reconnected, maybe to another node, and its old session is stale;
- any other holder keeps it, and the claimant is told who holds it (node and user).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Final

CLAIM_KINDS: Final = frozenset({"domain", "port", "udp", "proxy"})  # what a claim may name
MAX_CLAIM_NAMES: Final = 64  # names one claim may take at once (a proxy's domains)
MAX_NAME_CHARS: Final = 512  # a domain plus its location, a port number, a proxy name


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a claim: the node with the control connection, the user and the client id."""

    node: str
    user: str
    client: str

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, raw: str | bytes) -> Owner:
        data = json.loads(raw)
        return cls(str(data["node"]), str(data["user"]), str(data["client"]))


def claim_key(prefix: str, kind: str, name: str) -> str:
    """The Redis key of one claim; refuses kinds and names outside the bounds."""
    if kind not in CLAIM_KINDS:
        raise ValueError(f"unknown claim kind {kind!r}")
    if not name or len(name) > MAX_NAME_CHARS:
        raise ValueError(f"a claim name must have 1 to {MAX_NAME_CHARS} characters")
    return f"{prefix}claim:{kind}:{name}"


def split_claim_key(prefix: str, key: str) -> tuple[str, str] | None:
    """(kind, name) of a claim key, or None for any other key."""
    head = f"{prefix}claim:"
    if not key.startswith(head):
        return None
    kind, sep, name = key[len(head) :].partition(":")
    if not sep or kind not in CLAIM_KINDS:
        return None
    return kind, name


# KEYS: the claim keys. ARGV: owner JSON, lease ms, channel, the event's JSON prefix.
# Returns {1} when every key is now the claimant's, or {0, key, holder} for the first key held
# by someone else (nothing is changed then).
CLAIM_SCRIPT: Final = """
local mine = cjson.decode(ARGV[1])
for i, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held then
    local h = cjson.decode(held)
    if h.user ~= mine.user or h.client ~= mine.client then
      return {0, key, held}
    end
  end
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
end
redis.call('PUBLISH', ARGV[3], cjson.encode({op='claim', keys=KEYS, owner=mine}))
return {1}
"""

# KEYS: claim keys. ARGV: owner JSON, lease ms, channel. Renews the keys held by exactly this
# owner, and takes back (and publishes) those that are gone: Redis restarted empty, or the
# lease ran out while Redis was away; nobody else holds them, so they are still this owner's.
# Returns the 1-based indexes of the keys another owner holds now (taken over).
REFRESH_SCRIPT: Final = """
local lost = {}
local back = {}
for i, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  elseif not held then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    table.insert(back, key)
  else
    table.insert(lost, i)
  end
end
if #back > 0 then
  redis.call('PUBLISH', ARGV[3], cjson.encode({op='claim', keys=back, owner=cjson.decode(ARGV[1])}))
end
return lost
"""

# KEYS: claim keys. ARGV: owner JSON, channel. Deletes the keys still held by this owner and
# publishes their release; returns how many it deleted.
RELEASE_SCRIPT: Final = """
local gone = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    table.insert(gone, key)
  end
end
if #gone > 0 then
  redis.call('PUBLISH', ARGV[2], cjson.encode({op='release', keys=gone}))
end
return #gone
"""


@dataclass(frozen=True, slots=True)
class RouteEvent:
    """One message of the routes channel: a claim (with its owner) or a release."""

    op: str
    keys: tuple[str, ...]
    owner: Owner | None

    @classmethod
    def decode(cls, raw: str | bytes) -> RouteEvent:
        data = json.loads(raw)
        op = str(data["op"])
        if op not in ("claim", "release"):
            raise ValueError(f"unknown route event {op!r}")
        keys = data.get("keys") or []
        # cjson encodes an empty Lua table as {} rather than []
        if not isinstance(keys, list):
            keys = []
        owner = data.get("owner")
        return cls(
            op,
            tuple(str(k) for k in keys),
            Owner(str(owner["node"]), str(owner["user"]), str(owner["client"]))
            if op == "claim" and isinstance(owner, dict)
            else None,
        )

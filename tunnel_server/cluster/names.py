"""What a proxy claims in the cluster: its name, its routes and its fixed ports.

One tunneld already refuses a second owner for a proxy name, a domain route or a port. In a
cluster the same rules must hold across nodes, so each of these becomes a claim in the
registry before the node binds anything (docs/cluster.md):

- `proxy`: the qualified proxy name (names are global on a server, and so in a cluster);
- `domain`: each route the proxy serves, as "host/location" plus "@user" with
  routeByHTTPUser, so that two proxies may share a host on different paths, as on one node;
- `port` / `udp`: a fixed remotePort. Ports the server picks (remotePort = 0) are local to
  the node that picked them, because each node listens only on its own ports.
"""

from __future__ import annotations

from typing import Final

from protocol.messages import NewProxy

ROUTED_TYPES: Final = frozenset({"http", "https", "tcpmux"})  # routed by host name


def route_hosts(request: NewProxy, sub_domain_host: str) -> list[str]:
    """The hosts a routed proxy asks for: its custom domains and its subdomain's full name."""
    hosts = [domain.lower() for domain in request.custom_domains]
    if request.subdomain and sub_domain_host:
        hosts.append(f"{request.subdomain.lower()}.{sub_domain_host.lower()}")
    return hosts


def proxy_claims(
    request: NewProxy, qualified: str, sub_domain_host: str
) -> list[tuple[str, list[str]]]:
    """(kind, names) pairs that one proxy claims, in the order they are claimed."""
    claims: list[tuple[str, list[str]]] = [("proxy", [qualified])]
    kind = request.type
    if kind in ROUTED_TYPES:
        suffix = f"@{request.route_by_http_user}" if request.route_by_http_user else ""
        locations = request.locations or ("/",)
        routes = [
            f"{host}{location}{suffix}"
            for host in route_hosts(request, sub_domain_host)
            for location in locations
        ]
        if routes:
            claims.append(("domain", routes))
    elif kind == "tcp" and request.remote_port:
        claims.append(("port", [str(request.remote_port)]))
    elif kind == "udp" and request.remote_port:
        claims.append(("udp", [str(request.remote_port)]))
    return claims

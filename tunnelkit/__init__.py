"""tunnelkit's Python API: open a tunnel to a local port from code, with its captured requests.

    import tunnelkit

    t = await tunnelkit.forward(8000, server="tunnel.example.com:7000", token="...")
    print(t.url)          # the public URL
    print(t.requests)     # what came through, oldest first (the inspector's captures)
    await t.aclose()

    with tunnelkit.forward(8000, server=..., token=...) as t:   # the same, from sync code
        ...

See docs/api.md. This package may import `tunnel_client` and `protocol`; they never import it.
"""

from tunnel_client.inspect.exchange import CapturedBody, CapturedExchange
from tunnelkit.api import Forwarding, TunnelError, forward

__all__ = ["CapturedBody", "CapturedExchange", "Forwarding", "TunnelError", "forward"]

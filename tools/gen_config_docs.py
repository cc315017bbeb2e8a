"""Print docs/config.md, generated from the config field tables of both apps.

Run: `python tools/gen_config_docs.py > docs/config.md`
"""

from __future__ import annotations

import sys

from tunnel_client.config import CLIENT_FIELDS
from tunnel_client.proxyconfig import PROXY_FIELDS
from tunnel_client.signerconfig import SIGNER_FIELDS
from tunnel_client.visitorconfig import VISITOR_FIELDS
from tunnel_common.configdocs import render_config_docs
from tunnel_server.config import SERVER_FIELDS

SECTIONS = (
    ("tunneld: frps.toml", "", SERVER_FIELDS),
    ("tunnelc: frpc.toml", "", CLIENT_FIELDS),
    ("tunnelc: each [[proxies]] entry", "proxies[].", PROXY_FIELDS),
    ("tunnelc: each [[visitors]] entry", "visitors[].", VISITOR_FIELDS),
    ("tunnelc: each [[inspect.signers]] entry", "inspect.signers[].", SIGNER_FIELDS),
)


def main() -> None:
    sys.stdout.write(render_config_docs(SECTIONS))


if __name__ == "__main__":
    main()

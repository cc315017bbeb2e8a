"""Render field tables as the markdown of docs/config.md, and as lines for `--help`.

Pure text in, text out: `tools/gen_config_docs.py` writes the file, and a unit test checks
that the file in the tree is what the tables render today.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from tunnel_common.configfields import FieldTable

NOT_SUPPORTED: Final = "not supported yet"

_HEADER: Final = """\
# Configuration keys

Generated from the field tables in `tunnel_server/config.py`, `tunnel_client/config.py`
and `tunnel_client/proxyconfig.py` (each key is declared there once, with its type, range,
default and help). Do not edit by hand: run `python tools/gen_config_docs.py > docs/config.md`.
`tests/unit/test_config_docs.py` fails when this file is out of date.

States:

- **supported**: an frp key, with frp's meaning;
- **tunnelkit only**: a key frp does not have;
- **accepted, no effect**: an frp key tunnelkit reads and checks, then logs one INFO line
  saying why it changes nothing here;
- **not supported yet**: an frp key tunnelkit refuses, naming the key, with what to do
  instead. A key that names a table covers every key inside it.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(fields: FieldTable, prefix: str = "") -> list[str]:
    """The markdown table of one field table, then its not-supported-yet frp keys."""
    lines = [
        "| key | type | default | state | meaning |",
        "|---|---|---|---|---|",
    ]
    for key, kind, default, state, help_text in fields.rows():
        cells = (f"`{prefix}{key}`", kind, default and f"`{default}`", state, help_text)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    for key, hint in sorted((fields.unsupported or {}).items()):
        cells = (f"`{prefix}{key}`", "", "", NOT_SUPPORTED, hint)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def render_config_docs(sections: Sequence[tuple[str, str, FieldTable]]) -> str:
    """The whole docs/config.md: one section per (title, key prefix, table)."""
    lines = [_HEADER]
    for title, prefix, fields in sections:
        lines.append(f"## {title}\n")
        lines.extend(render_table(fields, prefix))
        lines.append("")
    return "\n".join(lines)


def help_epilog(name: str, sections: Sequence[tuple[str, FieldTable]]) -> str:
    """The `--help` epilog: every key with its type and default (click keeps `\\b` blocks)."""
    parts = [f"Config keys of {name} (docs/config.md has the meaning of each):"]
    for prefix, fields in sections:
        parts.append("\b\n" + "\n".join(f"  {prefix}{line}" for line in fields.help_lines()))
    return "\n\n".join(parts)

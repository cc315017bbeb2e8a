"""frp's own config files and users' configs (tests/data/frp/), each verified in process.

`classify` runs one file through the same loader `tunneld verify` / `tunnelc verify` use and
says how it ends: valid, refused only on frp features tunnelkit does not support yet (each
named), or invalid. `tools/gen_corpus_docs.py` writes docs/frp-corpus.md from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from protocol.errors import ConfigError
from tunnel_client.config import load_client_config
from tunnel_server.config import load_server_config

ROOT: Final = Path(__file__).resolve().parents[2]
CORPUS: Final = ROOT / "tests/data/frp"
# The README's "Using Environment Variables" example reads these two variables.
ENV: Final = {"FRP_SERVER_ADDR": "203.0.113.1", "FRP_SSH_REMOTE_PORT": "6000"}
VALID, NOT_YET, INVALID = "valid", "not supported yet", "invalid"
_NAMED: Final = re.compile(r"'([^']+)'")
# Files that are broken examples in frp too (besides those whose frp verdict is "refused"):
# tunnelkit calls them invalid, with the reason frp would fail or do nothing with them.
BROKEN_IN_FRP: Final = {
    "issue3811_frpc.toml": "[[rdp]] is not a table frp reads: frp starts no proxy from it (or "
    "refuses the unknown key in strict mode); tunnelkit names the key instead",
    "README_0648_token-authentication.toml": "auth.tokenSource.file.path is the placeholder "
    "/path/to/token/file: frp fails to read it too, as tunnelkit does, when it loads the file",
}
_VALUE: Final = re.compile(r'^"([^"]+)" is not supported yet')


@dataclass(frozen=True, slots=True)
class Entry:
    """One corpus file: where it is, which side reads it, and where it came from."""

    path: Path
    side: str  # "frps" or "frpc"
    source: str
    frp_verdict: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How verify ends: `kind` and, unless valid, the features or problems it names."""

    kind: str
    detail: str = ""


def entries() -> Iterator[Entry]:
    """Every config file of the corpus, in a stable order."""
    for path in sorted((CORPUS / "conf").iterdir()):
        side = "frps" if "frps" in path.name else "frpc"
        yield Entry(path, side, f"frp conf/{path.name}")
    for path in sorted((CORPUS / "legacy").iterdir()):
        side = "frps" if "frps" in path.name else "frpc"
        yield Entry(path, side, f"frp conf/legacy/{path.name}")
    for name, side, section in _manifest(CORPUS / "readme/MANIFEST.tsv"):
        source = "frp doc/" if not name.startswith("README") else "frp README.md: "
        yield Entry(CORPUS / "readme" / name, side, f"{source}{section}")
    for name, side, url, verdict in _manifest(CORPUS / "issues/MANIFEST.tsv"):
        yield Entry(CORPUS / "issues" / name, side, url, verdict)


def _manifest(path: Path) -> Iterator[list[str]]:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            yield line.split("\t")


def classify(entry: Entry) -> Outcome:
    """Verify one file as tunneld or tunnelc would, and sort the result."""
    try:
        if entry.side == "frps":
            load_server_config(entry.path, env=ENV)
        else:
            load_client_config(entry.path, env=ENV)
    except ConfigError as exc:
        problems = getattr(exc, "problems", (exc,))
        if all("not supported yet" in p.reason for p in problems):
            return Outcome(NOT_YET, ", ".join(sorted({_feature(p) for p in problems})))
        first = next(p for p in problems if "not supported yet" not in p.reason)
        return Outcome(INVALID, f"{first.key}: {first.reason}" if first.key else first.reason)
    return Outcome(VALID)


def _feature(problem: ConfigError) -> str:
    """The frp key or value a "not supported yet" problem names."""
    value = _VALUE.match(problem.reason)
    if value:
        return f"{problem.key.rpartition('.')[2]} = {value.group(1)}"
    named = _NAMED.findall(problem.reason.partition(" not supported yet")[0])
    return ", ".join(named) if named else problem.key

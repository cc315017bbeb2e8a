"""frpc's `includes`: more `[[proxies]]` from other files, and naming proxies in errors.

`includes = ["./confd/*.toml"]` reads every file that matches, in name order, as frp does:
the pattern's directory is read and its last part matched against each file name. Each file
may be in any format frp reads and goes through the same templates and schema; its
`[[proxies]]` and `[[visitors]]` are used, as frp's `LoadAdditionalClientConfigs` does, and
any other key is noted as ignored. A relative pattern is taken relative to the config file,
like every other path in it.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from protocol.errors import ConfigError
from tunnel_common.configfile import (
    ConfigTable,
    Table,
    check_document,
    parse_document,
    read_config_text,
)

logger = logging.getLogger(__name__)

MAX_INCLUDED_FILES: Final = 1000  # files all `includes` patterns may match together
_PROXY_PATH: Final = re.compile(r"(proxies\[(\d+)\])(?=\.|$)")


def read_includes(
    root: ConfigTable, schema: Table, env: Mapping[str, str], problems: list[ConfigError]
) -> tuple[list[ConfigTable], list[ConfigTable]]:
    """The checked `[[proxies]]` and `[[visitors]]` tables of every included file.

    Problems go to `problems`.
    """
    tables: list[ConfigTable] = []
    visitors: list[ConfigTable] = []
    files: list[Path] = []
    for index, pattern in enumerate(root.strs("includes")):
        where = f"includes[{index}]"
        full = Path(pattern).expanduser()
        full = full if full.is_absolute() else root.base_dir / full
        try:
            names = sorted(p.name for p in full.parent.iterdir() if p.is_file())
        except FileNotFoundError:
            names = []  # an include directory not made yet: noted below, as "no file"
        except OSError as exc:
            problems.append(root.error(where, f"cannot read {full.parent}: {exc.strerror}"))
            continue
        matched = [full.parent / n for n in names if fnmatch.fnmatchcase(n, full.name)]
        if not matched:
            root.notes.append(f"{root.source}: {where}: {pattern!r} matches no file")
        files.extend(matched)
    if len(files) > MAX_INCLUDED_FILES:
        problems.append(
            root.error("includes", f"match {len(files)} files; at most {MAX_INCLUDED_FILES}")
        )
        return [], []
    for path in files:
        source = str(path)
        try:
            document = parse_document(read_config_text(path), source, side="frpc", env=env)
            included = check_document(
                document, source=source, schema=schema, base_dir=path.parent, collect=True
            )
        except ConfigError as exc:
            problems.extend(getattr(exc, "problems", (exc,)))
            continue
        problems.extend(included.explain(p) for p in included.problems)
        root.notes.extend(included.notes)
        others = [key for key in included if key not in ("proxies", "visitors")]
        if others:
            root.notes.append(
                f"{source}: only [[proxies]] and [[visitors]] are read from an included file, "
                f"as in frp; ignored: {', '.join(others)}"
            )
        tables.extend(included.tables("proxies"))
        visitors.extend(included.tables("visitors"))
    return tables, visitors


def name_proxy(
    root: ConfigTable, included: Sequence[ConfigTable], problem: ConfigError
) -> ConfigError:
    """`problem`, with the proxy's name after its index: `proxies[3] (web-admin).localPort`."""
    match = _PROXY_PATH.match(problem.key)
    if match is None or "(" in problem.key:
        return problem
    index = int(match.group(2))
    tables = root.tables("proxies") if problem.source == root.source else ()
    if problem.source != root.source:
        tables = tuple(t for t in included if t.source == problem.source)
    if index >= len(tables):
        return problem
    name = tables[index].get("name", str)
    if not name:
        return problem
    key = f"{match.group(1)} ({name}){problem.key[match.end() :]}"
    return ConfigError(problem.source, key, problem.reason)

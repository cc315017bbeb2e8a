"""Architecture rules checked on the source: the sans-IO core, and who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "tunnel_common", "tunnel_server", "tunnel_client")
IO_MODULES = frozenset({"asyncio", "socket", "ssl", "time"})
# protocol/ is the wire only, aio/ included: no files, no randomness of its own choosing, no
# logging set-up. Config, logging handlers and web guards live in tunnel_common/.
NOT_WIRE_MODULES = frozenset(
    {
        "os",
        "io",
        "pathlib",
        "shutil",
        "tempfile",
        "random",
        "secrets",
        "logging.handlers",
        "logging.config",
    }
)


def modules_imported(source: str, module: str) -> set[str]:
    """Absolute names of every module `source` imports, anywhere in the file.

    `module` is the dotted name of the file itself, so relative imports resolve to absolute
    names. `__import__("x")` and `importlib.import_module("x")` with a literal count too.
    """
    package = module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                prefix = ".".join([*base, node.module] if node.module else base)
            else:
                prefix = node.module or ""
            found.add(prefix)
            # `from pkg import sub` may import a submodule: count pkg.sub as well.
            found.update(f"{prefix}.{alias.name}" for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id == "__import__"
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def top_levels(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names if name}


def source_files(package: str) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files found under {package}/"
    return files


def module_name(path: Path) -> str:
    # An __init__.py keeps "__init__" as its last part, so its parent is its own package,
    # which is what relative imports inside it are relative to.
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def imports_of(path: Path) -> set[str]:
    return modules_imported(path.read_text(encoding="utf-8"), module_name(path))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


SANS_IO_FILES = [p for p in source_files("protocol") if "aio" not in p.relative_to(ROOT).parts]


def test_layering_walker_sees_every_import_form() -> None:
    """The AST walker finds plain, from, relative, nested and dynamic imports."""
    source = (
        "import asyncio.events\n"
        "from time import monotonic\n"
        "from . import errors\n"
        "from ..other import thing\n"
        "def f():\n"
        "    import socket\n"
        "    __import__('ssl')\n"
        "    importlib.import_module('tunnel_client.cli')\n"
    )
    found = modules_imported(source, "pkg.sub.mod")
    assert top_levels(found) >= {"asyncio", "time", "socket", "ssl", "tunnel_client"}
    assert {"pkg.sub.errors", "pkg.other", "pkg.other.thing"} <= found


def test_layering_protocol_core_has_files() -> None:
    """The sans-IO check really looks at the core modules (and not at protocol/aio/)."""
    names = {_rel(p) for p in SANS_IO_FILES}
    assert {"protocol/frames.py", "protocol/mux.py", "protocol/stream.py"} <= names
    assert not any(name.startswith("protocol/aio/") for name in names)


@pytest.mark.parametrize("path", SANS_IO_FILES, ids=_rel)
def test_layering_protocol_core_does_no_io(path: Path) -> None:
    """protocol/ outside protocol/aio/ never imports asyncio, socket, ssl or time."""
    forbidden = top_levels(imports_of(path)) & IO_MODULES
    assert not forbidden, f"{_rel(path)} imports {sorted(forbidden)}"


def test_layering_io_adapter_is_where_asyncio_lives() -> None:
    """Sanity check of the rule's scope: protocol/aio/ does import asyncio."""
    assert "asyncio" in top_levels(imports_of(ROOT / "protocol/aio/connection.py"))


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("tunnel_server", "tunnel_client"), ("tunnel_client", "tunnel_server")],
)
def test_layering_server_and_client_never_import_each_other(package: str, forbidden: str) -> None:
    """tunnel_server never imports tunnel_client, and vice versa."""
    offenders = [_rel(p) for p in source_files(package) if forbidden in top_levels(imports_of(p))]
    assert not offenders, f"{package} modules import {forbidden}: {offenders}"


def test_layering_protocol_imports_neither_app() -> None:
    """The shared protocol package depends on neither application."""
    offenders = [
        _rel(p)
        for p in source_files("protocol")
        if top_levels(imports_of(p)) & {"tunnel_server", "tunnel_client"}
    ]
    assert not offenders


def test_layering_msgpack_only_in_frames() -> None:
    """msgpack is imported by protocol/frames.py and by no other module of the three packages."""
    importers = {
        _rel(path)
        for package in PACKAGES
        for path in source_files(package)
        if "msgpack" in top_levels(imports_of(path))
    }
    assert importers == {"protocol/frames.py"}


@pytest.mark.parametrize("path", source_files("protocol"), ids=_rel)
def test_layering_protocol_is_the_wire_only(path: Path) -> None:
    """protocol/ (aio/ too) touches no files, draws no `random`, and sets up no log handlers."""
    forbidden = imports_of(path) & NOT_WIRE_MODULES
    forbidden |= top_levels(imports_of(path)) & (NOT_WIRE_MODULES - {"logging.handlers"})
    source = path.read_text(encoding="utf-8")
    calls = {
        name
        for name in ("open(", "basicConfig(", "Handler(", "addHandler(")
        if any(
            isinstance(node, ast.Call) and ast.unparse(node.func).endswith(name[:-1])
            for node in ast.walk(ast.parse(source))
        )
    }
    assert not forbidden and not calls, f"{_rel(path)} uses {sorted(forbidden | calls)}"


def test_layering_protocol_never_imports_tunnel_common() -> None:
    """The wire does not depend on the shared app code; tunnel_common may import protocol."""
    offenders = [
        _rel(p) for p in source_files("protocol") if "tunnel_common" in top_levels(imports_of(p))
    ]
    assert not offenders


def test_layering_tunnel_common_imports_neither_app() -> None:
    """tunnel_common is shared by both apps, so it imports neither of them."""
    offenders = [
        _rel(p)
        for p in source_files("tunnel_common")
        if top_levels(imports_of(p)) & {"tunnel_server", "tunnel_client"}
    ]
    assert not offenders


@pytest.mark.parametrize("package", ["protocol", "tunnel_common", "tunnel_server", "tunnel_client"])
def test_layering_nothing_imports_the_python_api(package: str) -> None:
    """tunnelkit (the Python API) builds on the client; no other package imports it."""
    offenders = [_rel(p) for p in source_files(package) if "tunnelkit" in top_levels(imports_of(p))]
    assert not offenders, f"{package} modules import tunnelkit: {offenders}"


def test_layering_python_api_never_imports_the_server() -> None:
    """tunnelkit may import tunnel_client and protocol, never tunnel_server."""
    offenders = [
        _rel(p) for p in source_files("tunnelkit") if "tunnel_server" in top_levels(imports_of(p))
    ]
    assert not offenders

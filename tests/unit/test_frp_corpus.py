"""frp's own files and users' configs: each verifies, or names what is not supported yet."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.support.frpcorpus import (
    BROKEN_IN_FRP,
    INVALID,
    NOT_YET,
    ROOT,
    VALID,
    Entry,
    classify,
    entries,
)

ENTRIES = list(entries())


def _render() -> str:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "tools/gen_corpus_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.render())


def test_frp_corpus_has_every_kind_of_file() -> None:
    """The corpus holds frp's conf/, legacy INI, README blocks and 15+ users' configs."""
    folders = [entry.path.parent.name for entry in ENTRIES]
    assert folders.count("conf") == 4 and folders.count("legacy") == 2
    assert folders.count("readme") >= 60
    assert folders.count("issues") >= 15
    assert all(entry.path.is_file() for entry in ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.path.name)
def test_frp_corpus_file_verifies_or_names_what_is_missing(entry: Entry) -> None:
    """frp's own files pass, or fail only on features named "not supported yet"; a file is
    invalid only when it is broken in frp too."""
    outcome = classify(entry)
    if entry.frp_verdict.startswith("refused"):
        assert outcome.kind in (INVALID, NOT_YET)  # frp refuses it too
    elif entry.path.name in BROKEN_IN_FRP:
        assert outcome.kind == INVALID
    else:
        assert outcome.kind in (VALID, NOT_YET), outcome.detail
    if outcome.kind == NOT_YET:
        assert outcome.detail


def test_frp_corpus_docs_table_is_current() -> None:
    """docs/frp-corpus.md is what the corpus gives today (regenerate it if not)."""
    current = (ROOT / "docs/frp-corpus.md").read_text(encoding="utf-8")
    assert current == _render(), "run: python tools/gen_corpus_docs.py > docs/frp-corpus.md"


def test_frp_corpus_docs_never_show_a_checkout_path() -> None:
    """The generated table is the same on any machine: no absolute paths in it."""
    assert str(Path(ROOT)) not in _render()

"""Fixtures shared by every test directory (pytest settings live in pyproject.toml)."""

import re
import shutil
from pathlib import Path
from typing import Final

import pytest

ARTIFACTS_DIRNAME: Final = "test-artifacts"  # ignored by git; CI keeps it after a failure
MAX_ARTIFACT_NAME_CHARS: Final = 120


@pytest.fixture(scope="session")
def artifacts_dir(pytestconfig: pytest.Config) -> Path:
    """`test-artifacts/` at the repository root, for logs worth keeping after the run."""
    path = pytestconfig.rootpath / ARTIFACTS_DIRNAME
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def artifacts(artifacts_dir: Path, request: pytest.FixtureRequest) -> Path:
    """A fresh per-test directory under `test-artifacts/`, named after the test id."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.nodeid).strip("-")
    path = artifacts_dir / slug[-MAX_ARTIFACT_NAME_CHARS:]
    shutil.rmtree(path, ignore_errors=True)  # leftovers from an earlier run of the same test
    path.mkdir()
    return path

"""Fixtures shared by every test directory (pytest settings live in pyproject.toml)."""

import gc
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

ARTIFACTS_DIRNAME: Final = "test-artifacts"  # ignored by git; CI keeps it after a failure
MAX_ARTIFACT_NAME_CHARS: Final = 120

PATIENT_EXPECT_MS = 10_000.0  # Playwright wait for one page state in the e2e tests
PLAYWRIGHT_DEFAULT_EXPECT_MS = 5_000.0


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


@pytest.fixture
def screenshots(artifacts_dir: Path) -> Path:
    """test-artifacts/screenshots/, kept after the run for a human to look at."""
    path = artifacts_dir / "screenshots"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def patient_expect() -> Iterator[None]:
    """Playwright's `expect` waits up to 10 s in this test (the pages poll every 2 s)."""
    from playwright.async_api import expect

    expect.set_options(timeout=PATIENT_EXPECT_MS)
    yield
    expect.set_options(timeout=PLAYWRIGHT_DEFAULT_EXPECT_MS)


@pytest.fixture(autouse=True)
def collect_garbage_after_test() -> Iterator[None]:
    """Collects garbage when each test ends, so a socket or transport a test left open warns
    (and fails) in that test rather than in whichever test the collector happens to run in."""
    yield
    gc.collect()

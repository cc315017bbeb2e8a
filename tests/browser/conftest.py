"""Fixtures for browser tests (helpers live in tests/support/browser.py)."""

from pathlib import Path

import pytest


@pytest.fixture
def screenshots_dir(artifacts_dir: Path) -> Path:
    """test-artifacts/screenshots/, kept after the run for a human to look at."""
    path = artifacts_dir / "screenshots"
    path.mkdir(exist_ok=True)
    return path

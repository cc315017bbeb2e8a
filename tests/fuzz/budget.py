"""Fuzz runs: Hypothesis with an example budget from the environment.

CI runs a short version of every fuzz test (`FUZZ_EXAMPLES_DEFAULT` inputs each). The long,
separate run sets `TUNNELKIT_FUZZ_EXAMPLES=1000000` and selects the marker:

    TUNNELKIT_FUZZ_EXAMPLES=1000000 .venv/bin/python -m pytest -m fuzz tests/fuzz -q

docs/security.md records the counts of the last long run.
"""

import os
from typing import Final

from hypothesis import HealthCheck, settings

FUZZ_EXAMPLES_DEFAULT: Final = 500  # per parser, in every CI run (the claims rest on the long run)
FUZZ_EXAMPLES_ENV: Final = "TUNNELKIT_FUZZ_EXAMPLES"
# Set to a file path, the long run records how many inputs each test has run so far (the file
# is rewritten every COUNT_FLUSH_EVERY inputs), so a run cut short by its time bound still
# reports true counts.
FUZZ_COUNT_FILE_ENV: Final = "TUNNELKIT_FUZZ_COUNT_FILE"
COUNT_FLUSH_EVERY: Final = 1000
_counts: dict[str, int] = {}


def count_example(name: str) -> None:
    """Count one generated input of fuzz target `name` (see FUZZ_COUNT_FILE_ENV)."""
    count = _counts.get(name, 0) + 1
    _counts[name] = count
    path = os.environ.get(FUZZ_COUNT_FILE_ENV)
    if path and count % COUNT_FLUSH_EVERY == 0:
        with open(f"{path}.{name}", "w", encoding="utf-8") as out:
            out.write(f"{name} {count}\n")


def fuzz_examples() -> int:
    """The number of generated inputs per fuzz test for this run."""
    return int(os.environ.get(FUZZ_EXAMPLES_ENV, FUZZ_EXAMPLES_DEFAULT))


# Tests use `@settings(parent=FUZZ_SETTINGS)`; the profile has no deadline (a noisy machine
# must not fail a fuzz run on time) and no database (the long run is not replayed in CI).
FUZZ_SETTINGS: Final = settings(
    max_examples=fuzz_examples(),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

"""bench/profile_summary.py: self and inclusive shares from py-spy's raw collapsed stacks."""

from __future__ import annotations

from bench.profile_summary import summarise

RAW = """\
run (runner.py:10);transmit (connection.py:200);_flush (connection.py:420) 6
run (runner.py:10);transmit (connection.py:200) 2
run (runner.py:10);datagram_received (udp.py:99) 2
not a sample line
"""


def test_profile_summary_counts_self_and_inclusive_shares() -> None:
    """Self time goes to the innermost frame, inclusive time to every frame once per stack."""
    text = summarise(RAW, top=10)
    lines = text.splitlines()
    assert lines[0] == "10 samples"
    self_part = lines[lines.index("self %  function") + 1 : lines.index("total %  function") - 1]
    assert self_part[0].split() == ["60.0%", "_flush", "(connection.py)"]
    total_part = lines[lines.index("total %  function") + 1 :]
    assert total_part[0].split() == ["100.0%", "run", "(runner.py)"]
    assert " 80.0%  transmit (connection.py)" in total_part


def test_profile_summary_of_nothing_says_so() -> None:
    """An empty profile reports no samples instead of dividing by zero."""
    assert summarise("", top=5) == "no samples"

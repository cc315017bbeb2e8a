"""Test support: real processes (procs), real peers (peers), echo servers (echo), netns (netns)."""

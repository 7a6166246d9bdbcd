"""The JSON log helpers."""

from __future__ import annotations

from nudge_server.logs import EveryFewSeconds


def test_a_repeated_line_goes_through_once_per_interval_counting_the_rest() -> None:
    gate = EveryFewSeconds(interval_s=3600)
    assert gate.due() == 0
    assert [gate.due() for _ in range(5)] == [None] * 5
    always = EveryFewSeconds(interval_s=0)
    assert [always.due() for _ in range(3)] == [0, 0, 0]

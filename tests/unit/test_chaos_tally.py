"""The chaos drill's arithmetic: a lost or doubled send cannot hide in the table."""

from __future__ import annotations

from collections import Counter

from gateway_tools.chaos.env import AppLoad, Send
from gateway_tools.chaos.main import render, tally


def load_with(*sends: Send) -> AppLoad:
    load = AppLoad(scenario="s", run_id="r", targets=["http://127.0.0.1:1"])
    load.sends.extend(sends)
    return load


def test_each_send_is_counted_once_lost_duplicated_or_refused() -> None:
    load = load_with(
        Send(0, "s-0", key="k0", accepted=True, answers=["202"]),  # delivered once
        Send(1, "s-1", key=None, accepted=True, answers=["200"]),  # accepted, never arrived: lost
        Send(2, "s-2", key="k2", accepted=True, answers=["down", "200"]),  # keyed, arrived twice
        Send(3, "s-3", key=None, accepted=True, answers=["202"]),  # unkeyed, arrived twice
        Send(4, "s-4", key="k4", accepted=False, answers=["503"]),  # keyed, never accepted
        Send(5, "s-5", key=None, accepted=False, answers=["down"]),  # refused, arrived anyway
    )
    result = tally("s", load, Counter({"s-0": 1, "s-2": 2, "s-3": 2, "s-5": 1}))
    assert (result.sends, result.accepted, result.once, result.lost, result.refused) == (6, 4, 1, 1, 2)
    assert (result.keyed_duplicates, result.unkeyed_duplicates, result.keyed_refused) == (1, 1, 1)
    assert result.answers == Counter({"202": 2, "200": 2, "down": 2, "503": 1})
    assert not result.passed
    assert "1 keyed sends never accepted" in render([result])


def test_a_clean_scenario_passes_and_renders_its_row() -> None:
    result = tally("s", load_with(Send(0, "s-0", key="k", accepted=True, answers=["200"])), Counter({"s-0": 1}))
    assert result.passed
    row = render([result]).splitlines()[2].split()
    assert row == ["s", "1", "1", "1", "0", "0", "0", "0"]

"""The README's first command: the demo, end to end on its own embedded broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.demo import run_demo, weights_table

from .conftest import unique_settings


def test_weights_table_has_a_line_per_signal_and_a_column_per_platform() -> None:
    table = weights_table({"shop": {"head": 1.0, "fresh": 0.05}, "news": {"head": 0.934}})
    assert table.splitlines() == [
        "signal   news   shop",
        "head     0.93   1.00",
        "fresh       -   0.05",
    ]
    wide = weights_table({"bookstore": {"head": 1.0}, "tv": {"head": 0.5}})
    assert wide.splitlines() == ["signal bookstore     tv", "head        1.00   0.50"]


@pytest.mark.integration
def test_the_demo_prints_recommendations_dead_letters_and_weights(
    serving_artifacts: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_demo(unique_settings(serving_artifacts), pace_s=0.0, limit=40) == 0
    out = capsys.readouterr().out
    summary = next(line for line in out.splitlines() if "recommendation lists" in line)
    # every event but the identify ones gets a list; the two bad messages are dead-lettered
    lists, expected = summary.split("→ ")[1].split(" recommendation lists (expected ")
    assert lists == expected.split(")")[0] and int(lists) > 0
    assert "2 dead-lettered: malformed JSON" in summary and "unknown platform 'tv'" in summary
    assert "event → recommendation latency: p50" in out
    header = next(line for line in out.splitlines() if line.startswith("signal "))
    assert header.split() == ["signal", "music", "news", "shop", "video"]
    assert any(line.split()[:1] == ["head"] and len(line.split()) == 5 for line in out.splitlines())
    assert sum(1 for line in out.splitlines() if line.startswith("[")) == int(lists)

"""Where a changelog partition ends, read from its last records (streams.transport)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from faust.types import TP

from models.errors import BrokerError
from streams import transport

A, B = TP("changelog", 0), TP("changelog", 1)


@dataclass
class Record:
    offset: int


class FakeProbe:
    """Answers fetches like the embedded broker: records of the last batch, a highwater."""

    def __init__(self, records: dict[TP, list[int]], highwaters: dict[TP, int | None]) -> None:
        self.records = records
        self.highwaters = highwaters
        self.fetched: list[tuple[TP, ...]] = []

    async def getmany(self, *partitions: TP, timeout_ms: int = 0) -> dict[TP, list[Any]]:
        self.fetched.append(partitions)
        return {tp: [Record(o) for o in self.records.get(tp, [])] for tp in partitions}

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters.get(tp)


def test_ends_are_raised_to_the_last_record_and_the_fetch_highwater() -> None:
    # ListOffsets said 17 (base of the last batch + 1); the batch holds offsets 16-19
    probe = FakeProbe({A: [16, 17, 18, 19], B: [4]}, {A: 20, B: 5})
    ends = asyncio.run(transport._ends_seen(probe, {A: 17, B: 5}, [A, B]))
    assert ends == {A: 20, B: 5}


def test_an_end_is_never_lowered() -> None:
    probe = FakeProbe({A: []}, {A: 3})
    assert asyncio.run(transport._ends_seen(probe, {A: 9}, [A])) == {A: 9}


def test_a_partition_that_cannot_be_read_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "PROBE_TIMEOUT_MS", 50)
    probe = FakeProbe({}, {A: None})
    with pytest.raises(BrokerError, match="could not read the last records"):
        asyncio.run(transport._ends_seen(probe, {A: 4}, [A]))
    assert probe.fetched  # it tried


def test_empty_or_unknown_partitions_are_not_read() -> None:
    reported: dict[TP, Any] = {A: 0, B: None}
    # nothing to read: no probe consumer is made (the thread itself is not needed)
    ends = asyncio.run(transport.ConsumerThread._read_ends(object(), reported))  # type: ignore[arg-type]
    assert ends == reported

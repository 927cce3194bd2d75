"""Faust's aiokafka transport with a configurable fetch wait and highwaters read from fetches.

Faust hard-codes ``fetch_max_wait_ms=1500``. Apache Kafka answers a waiting fetch as soon as
data arrives, so that is harmless there; the embedded Tansu broker holds the fetch for the
whole wait, which put 0.5-1.5 s on every hop (measured: event → recommendation p50 ~570 ms at
1500 ms, ~80 ms at 50 ms). Registered as the ``streamrec://`` broker scheme.

Table recovery reads each changelog partition up to its highwater, which Faust takes from
ListOffsets. The embedded broker answers ListOffsets with the base offset of the partition's
last record batch + 1, not its last record's + 1 (``../shared/notes/embedded-broker.md``), so
a worker restarted on its RocksDB state saw a highwater below the offset it had persisted and
never became ready (Faust's ConsistencyError, "79 > 77"), and a fresh one could stop reading a
changelog early (once 282 of 288 catalog items). So :meth:`ConsumerThread._highwaters` reads
each partition's last batch once and takes the end from what it holds and from the fetch's own
highwater, which the broker gets right; against Apache Kafka that only confirms ListOffsets'
answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import aiokafka
from faust.transport.drivers import TRANSPORTS
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from models.errors import BrokerError

#: How long reading the partitions' last batches may take (ms), beyond which recovery fails
#: with a clear error rather than trusting an end that may be short.
PROBE_TIMEOUT_MS = 10_000


class ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        return _with_fetch_wait(super()._create_worker_consumer(transport))

    def _create_client_consumer(self, transport: Any) -> Any:
        return _with_fetch_wait(super()._create_client_consumer(transport))

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        reported = await super()._highwaters(partitions)
        if self.consumer.in_transaction:  # last stable offsets, not ListOffsets
            return reported
        return await self._read_ends(reported)

    async def _read_ends(self, reported: Mapping[TP, int]) -> Mapping[TP, int]:
        """``reported`` (ListOffsets' ends) raised to what each partition's last batch shows:
        one more than its last record's offset, or the fetch's highwater if higher."""
        nonempty = {tp: end for tp, end in reported.items() if end}  # (None: unknown)
        if not nonempty:
            return reported
        # outside the group: Faust's client-only consumer, connected (servers, credentials,
        # timeouts) as the worker's is
        probe: aiokafka.AIOKafkaConsumer = self._create_client_consumer(self.transport)
        await probe.start()
        try:
            probe.assign(list(nonempty))
            for tp, end in nonempty.items():
                probe.seek(tp, end - 1)  # the last batch starts at or before it
            return await _ends_seen(probe, reported, nonempty)
        finally:
            await probe.stop()


def _with_fetch_wait(consumer: aiokafka.AIOKafkaConsumer) -> aiokafka.AIOKafkaConsumer:
    # aiokafka reads this when the consumer starts its fetcher (after it is created)
    consumer._fetch_max_wait_ms = Transport.fetch_max_wait_ms
    return consumer


async def _ends_seen(
    probe: aiokafka.AIOKafkaConsumer, reported: Mapping[TP, int], nonempty: Iterable[TP]
) -> dict[TP, int]:
    ends = dict(reported)
    waiting = set(nonempty)
    deadline = time.monotonic() + PROBE_TIMEOUT_MS / 1000.0
    while waiting:
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            raise BrokerError(
                f"could not read the last records of {sorted(waiting)} within "
                f"{PROBE_TIMEOUT_MS} ms to find where they end"
            )
        fetched = await probe.getmany(*waiting, timeout_ms=min(left_ms, 1000))
        for tp, records in fetched.items():
            if records:
                ends[tp] = max(ends[tp], records[-1].offset + 1)
        for tp in list(waiting):
            highwater = probe.highwater(tp)
            if highwater is not None:
                ends[tp] = max(ends[tp], highwater)
                waiting.discard(tp)
    return ends


class Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(driver.Transport):
    Consumer = Consumer
    fetch_max_wait_ms: ClassVar[int] = 1500


def register(fetch_max_wait_ms: int) -> str:
    """Make ``streamrec://`` URLs use this transport; returns the scheme."""
    Transport.fetch_max_wait_ms = fetch_max_wait_ms
    TRANSPORTS.aliases["streamrec"] = f"{__name__}:Transport"
    return "streamrec"

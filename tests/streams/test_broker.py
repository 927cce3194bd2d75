from __future__ import annotations

import logging
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from models.errors import BrokerError
from streams.broker import (
    EmbeddedBroker,
    _accepts_connections,
    discard_stale_state,
    embedded_incarnation,
    ensure_topics,
    free_port,
    wait_for_broker,
)

pytestmark = pytest.mark.integration


def test_topics_get_the_partition_count_asked_for(broker: EmbeddedBroker) -> None:
    ensure_topics(broker.bootstrap, ["broker-test-a", "broker-test-b"], 3)
    ensure_topics(broker.bootstrap, ["broker-test-a"], 3)  # idempotent
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        described = admin.describe_topics(["broker-test-a", "broker-test-b"])
        assert [len(t["partitions"]) for t in described] == [3, 3]
        admin.delete_topics(["broker-test-a", "broker-test-b"])
    finally:
        admin.close()


def test_state_from_another_broker_incarnation_is_discarded(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    incarnation = embedded_incarnation(broker.bootstrap)
    assert incarnation == broker.incarnation and incarnation
    state = tmp_path / "state"
    assert not discard_stale_state(state, incarnation)  # first start: nothing to discard
    (state / "tables").mkdir()
    assert not discard_stale_state(state, incarnation)  # same broker: keep
    assert (state / "tables").exists()
    assert discard_stale_state(state, "another-broker")  # broker restarted: wipe
    assert not (state / "tables").exists()
    assert not discard_stale_state(state, None)  # a real Kafka cluster: never wipe


def test_a_starting_broker_is_waited_for_without_error_logs(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The demo starts the broker and waits for it: refused connections while it starts are
    expected, and must not be logged as errors."""
    closed = f"127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING), EmbeddedBroker(log_file=tmp_path / "b.log") as broker:
        assert _accepts_connections(f"{closed},{broker.bootstrap}")  # one of them is enough
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not _accepts_connections(closed)
    with pytest.raises(BrokerError, match="no Kafka broker answered"):
        wait_for_broker(closed, timeout_s=0.3)

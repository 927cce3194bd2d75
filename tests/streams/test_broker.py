from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from streams.broker import EmbeddedBroker, discard_stale_state, embedded_incarnation, ensure_topics

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

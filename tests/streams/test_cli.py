"""``streamrec produce``: a file is checked whole before anything of it is sent."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from kafka import KafkaAdminClient, KafkaConsumer

from streams.broker import EmbeddedBroker, free_port
from streams.cli import SHOWN_ERRORS, main
from streams.settings import Settings


def event(n: int, platform: str = "shop", **fields: object) -> str:
    body = {"event_id": f"e{n}", "type": "view", "platform": platform, "user": "u1", "item": "a"}
    return json.dumps({**body, "ts": time.time(), **fields})


def lines_file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_file_with_invalid_lines_is_refused_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # nothing listens here: connecting at all would fail with another message
    monkeypatch.setenv("STREAMREC_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    path = lines_file(tmp_path, [event(1), "{oops", event(3, "tv"), "", event(5)])
    assert main(["produce", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("line 2: malformed JSON: ")
    assert err[1] == "line 3: unknown platform 'tv' (known: ['shop', 'video', 'music', 'news'])"
    assert err[2] == (
        "2 invalid lines: nothing sent (fix them, or pass --skip-invalid to send the 2 valid "
        "events)"
    )
    assert main(["produce", "--catalog", str(path)]) == 2  # events are no catalog items
    assert "line 1: invalid catalog item: " in capsys.readouterr().err
    assert main(["produce", str(tmp_path / "absent.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_lines_are_checked_as_the_worker_checks_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each of these passes a plain pydantic validation but the worker would dead-letter it."""
    monkeypatch.setenv("STREAMREC_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("STREAMREC_MAX_TEXT_CHARS", "100")
    path = lines_file(
        tmp_path,
        [
            event(1, ts=str(time.time())),  # a string is no timestamp: no coercion
            event(2, ts=time.time() + 3600),
            event(3, ts=time.time() - 11 * 365 * 86400),
            event(4, type="search", item=None, query="x" * 101),
            event(5),
        ],
    )
    assert main(["produce", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "line 1: invalid event: ts: Input should be a valid number"
    assert err[1].startswith("line 2: timestamp ") and err[1].endswith("s in the future")
    assert err[2].startswith("line 3: timestamp ") and " is older than " in err[2]
    assert err[3] == "line 4: field 'query' is longer than 100 characters"
    assert err[4].startswith("4 invalid lines: nothing sent")


def test_a_checked_file_is_sent_whole_even_as_the_clock_moves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file is checked at one instant; sending must not check each line again later, when
    an event near the age limit (here: an hour from it) would be refused half-way through."""
    import streams.client

    max_age = 86400.0
    monkeypatch.setenv("STREAMREC_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("STREAMREC_MAX_PAST_AGE_S", str(max_age))
    sent: list[tuple[str, bytes | None, bytes]] = []

    class Producer(streams.client.EventProducer):
        def __init__(self, settings: Settings) -> None:
            super().__init__(settings, connect=False)
            # connecting took longer than the hour the old event had left
            later = time.time() + 7200
            monkeypatch.setattr(streams.client, "time", SimpleNamespace(time=lambda: later))

        def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
            sent.append((topic, key, value))

    monkeypatch.setattr(streams.client, "EventProducer", Producer)
    path = lines_file(tmp_path, [event(1), event(2, ts=time.time() - max_age + 3600)])
    assert main(["produce", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "sent 2 events"
    assert [(t, k, json.loads(v)["event_id"]) for t, k, v in sent] == [
        ("events.shop", b"u1", "e1"),
        ("events.shop", b"u1", "e2"),
    ]


def test_only_the_first_invalid_lines_are_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMREC_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    path = lines_file(tmp_path, ["{"] * (SHOWN_ERRORS + 5))
    assert main(["produce", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == SHOWN_ERRORS + 2 and err[SHOWN_ERRORS] == "... and 5 more invalid lines"


@pytest.mark.parametrize("command", [["worker"], ["tail"], ["produce", "-"]])
def test_commands_that_need_kafka_say_so_when_none_is_set(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STREAMREC_BOOTSTRAP_SERVERS", raising=False)
    assert main(command) == 2
    assert "STREAMREC_BOOTSTRAP_SERVERS is not set" in capsys.readouterr().err


@pytest.mark.integration
def test_skip_invalid_sends_the_valid_lines(
    broker: EmbeddedBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}.events."
    monkeypatch.setenv("STREAMREC_BOOTSTRAP_SERVERS", broker.bootstrap)
    monkeypatch.setenv("STREAMREC_EVENT_TOPIC_PREFIX", prefix)
    path = lines_file(tmp_path, [event(1), "{oops", event(3)])
    assert main(["produce", "--skip-invalid", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "sent 2 events; skipped 1 invalid lines"
    consumer = KafkaConsumer(
        f"{prefix}shop", bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest"
    )
    try:
        got: list[bytes] = []
        for _ in range(20):
            for records in consumer.poll(timeout_ms=500).values():
                got += [r.value for r in records]
            if len(got) >= 2:
                break
        assert [json.loads(v)["event_id"] for v in got] == ["e1", "e3"]
    finally:
        consumer.close()
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        with contextlib.suppress(Exception):  # best effort: the broker is ephemeral
            admin.delete_topics([f"{prefix}shop"])
        admin.close()


@pytest.mark.parametrize("what", ["ranker", "sequence", "all"])
def test_a_model_trained_on_a_dataset_needs_its_own_artifacts_folder(
    what: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The worker hot-swaps to whatever its folder's CURRENT names: a head trained on Amazon
    published there would replace the shipped one. Refused before any training starts."""
    import export.ranker

    def must_not_train(*args: object, **kwargs: object) -> str:
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(export.ranker, "export_ranker", must_not_train)
    assert main(["export", what, "--dataset", "amazon"]) == 2
    assert "give it its own folder with --artifacts" in capsys.readouterr().err

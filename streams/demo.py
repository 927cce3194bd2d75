"""The demo: sample events from four platforms in, recommendations printed as they arrive."""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from models.events import CatalogItem
from streams.client import EventProducer, RecommendationSubscriber
from streams.settings import Settings
from streams.stack import LocalStack


def sample(name: str) -> list[dict[str, Any]]:
    text = (SAMPLE_DIR / name).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


SAMPLE_DIR = Path(__file__).parent / "sample"

# Bad input sent in the middle of the demo, to show where it goes.
BAD_INPUT: list[tuple[str, bytes]] = [
    ("malformed JSON", b'{"event_id": "bad-1", "type": "view",'),
    (
        "unknown platform",
        b'{"event_id": "bad-2", "type": "view", "platform": "tv", "user": "x",'
        b' "item": "y", "ts": 0}',
    ),
]


def weights_table(weights: dict[str, dict[str, float]]) -> str:
    """The blend's weights, a signal per line and a platform per column.

    >>> print(weights_table({"shop": {"head": 1.0, "fresh": 0.05}, "news": {"head": 0.93}}))
    signal   news   shop
    head     0.93   1.00
    fresh       -   0.05
    """
    platforms = sorted(weights)
    signals = list(dict.fromkeys(k for p in platforms for k in weights[p]))
    width = max([len("signal"), *map(len, signals)])
    columns = {p: max(6, len(p)) for p in platforms}
    lines = ["signal".ljust(width) + "".join(f" {p:>{columns[p]}}" for p in platforms)]
    for signal in signals:
        cells = [
            f" {'-':>{columns[p]}}"
            if (v := weights[p].get(signal)) is None
            else f" {v:{columns[p]}.2f}"
            for p in platforms
        ]
        lines.append(signal.ljust(width) + "".join(cells))
    return "\n".join(lines)


def run_demo(settings: Settings, pace_s: float = 0.02, limit: int | None = None) -> int:
    catalog = sample("catalog.jsonl")
    events = sample("events.jsonl")[:limit]
    titles = {CatalogItem.model_validate(i).key: i["title"] for i in catalog}
    print(
        f"starting the embedded broker and a worker ({len(catalog)} items, {len(events)} events "
        f"on {sorted({e['platform'] for e in events})}) ...",
        flush=True,
    )
    with LocalStack(settings) as stack:
        s = stack.settings
        assert stack.worker is not None
        producer = EventProducer(s)
        for item in catalog:
            producer.send_item(item)
        producer.flush()
        stack.worker.wait_for_catalog(len(catalog))
        print(
            f"catalog indexed: {stack.worker.status()['catalog_items']} items embedded by the "
            f"ONNX encoder. Replaying events; recommendations follow as they arrive:\n",
            flush=True,
        )

        received: list[Any] = []
        done = threading.Event()

        def tail() -> None:
            sub = RecommendationSubscriber(s)
            while not done.is_set():
                for rec in sub.recommendations(timeout_s=0.5):
                    received.append(rec)
                    latency_ms = (rec.published_ts - rec.event_ts) * 1000
                    top = ", ".join(
                        titles.get(f"{rec.platform}:{i.item}", i.item) for i in rec.items[:3]
                    )
                    via = "+".join(rec.history_platforms)
                    print(
                        f"[{rec.platform:5}] {rec.person:28} via {via:17}"
                        f" {latency_ms:6.1f} ms  → {top}",
                        flush=True,
                    )
            sub.close()

        tailer = threading.Thread(target=tail, daemon=True)
        tailer.start()
        start = time.time()
        for n, event in enumerate(events):
            event = {**event, "ts": time.time()}  # replay "now" so latencies are real
            producer.send(event)
            producer.flush()
            if n == len(events) // 2:
                for reason, raw in BAD_INPUT:
                    producer.send_raw(s.event_topic("shop"), b"x", raw)
                    print(f"  (sent bad input: {reason} → dead-letter topic)", flush=True)
            time.sleep(pace_s)
        expected = sum(1 for e in events if e["type"] != "identify")
        deadline = time.time() + 30
        while len(received) < expected and time.time() < deadline:
            time.sleep(0.2)
        done.set()
        tailer.join(timeout=5)
        dead_sub = RecommendationSubscriber(s, topic=s.dead_letter_topic)
        dead = list(dead_sub.records(timeout_s=2.0))
        dead_sub.close()
        producer.close()
        latencies = sorted((r.published_ts - r.event_ts) * 1000 for r in received)
        status = stack.worker.status()
        print(
            f"\n{len(events)} events in {time.time() - start:.1f}s → {len(received)} "
            f"recommendation lists (expected {expected}); {len(dead)} dead-lettered: "
            + "; ".join(dict(r.headers)["reason"].decode() for r in dead)
        )
        if latencies:
            p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
            print(
                f"event → recommendation latency: p50 {statistics.median(latencies):.1f} ms, "
                f"p99 {p99:.1f} ms (includes the demo's producer flush)"
            )
        print(f"model versions: {status['model_versions']}")
        print("blend weights now (each platform's, learned from the feedback above):")
        print(weights_table(status["blend_weights"]))
        if len(received) < expected:
            stack.keep_workdir = True
            print(f"missing lists: the worker's log is kept in {stack.workdir}")
        print("stopping the worker and the broker ...", flush=True)
        return 0 if len(received) >= expected else 1

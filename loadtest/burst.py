"""A first throughput/latency probe: start a local stack, send a burst of simulated events as
fast as the producer goes, and measure when each recommendation arrives.

    python -m loadtest.burst --events 5000

Talks to the system only through Kafka (events in, recommendations out) and HTTP (status).
Prints figures and writes ``reports/burst.json``. The full load-test harness (targets, open-loop
rates, p99 under load) is its own issue.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from models.simulator import World
from streams.client import EventProducer, RecommendationSubscriber
from streams.settings import Settings
from streams.stack import LocalStack


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--persons", type=int, default=500)
    ap.add_argument("--out", default="reports/burst.json")
    args = ap.parse_args(argv)
    world = World(seed=5)
    events = world.events(args.persons, max(1, args.events // args.persons), start_ts=0.0)
    events = [e for e in events if e["type"] != "identify"][: args.events]
    with LocalStack(Settings()) as stack:
        s = stack.settings
        assert stack.worker is not None
        producer = EventProducer(s, linger_ms=5)
        for item in world.items:
            producer.send_item(item)
        producer.flush()
        stack.worker.wait_for_catalog(len(world.items))
        sub = RecommendationSubscriber(s, from_beginning=False)
        list(sub.records(timeout_s=1.0))  # join before the burst
        before = stack.worker.status()
        t0 = time.time()
        for e in events:
            producer.send({**e, "ts": time.time()})
        producer.flush()
        sent_s = time.time() - t0
        latencies: list[float] = []
        last = t0
        deadline = time.time() + 300
        while len(latencies) < len(events) and time.time() < deadline:
            for rec in sub.recommendations(timeout_s=1.0):
                latencies.append((rec.published_ts - rec.event_ts) * 1000)
                last = time.time()
        total_s = last - t0
        status = stack.worker.status()
        sub.close()
        producer.close()
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    result = {
        "events": len(events), "recommendations": len(latencies),
        "produce_s": round(sent_s, 2), "end_to_end_s": round(total_s, 2),
        "throughput_events_per_s": round(len(latencies) / total_s, 1),
        "latency_ms": {"p50": round(statistics.median(latencies), 1), "p90": round(p(0.9), 1),
                       "p99": round(p(0.99), 1), "max": round(latencies[-1], 1)},
        "worker_stats": status["stats"],
        # the worker's own CPU time over the burst (its /status), both cores together
        "worker_cpu_s": round(status["cpu_s"] - before["cpu_s"], 2),
        # reranker fits finished during the burst (each in the worker's fitting process)
        "reranker_fits": (status["reranker_fits"] or 0) - (before["reranker_fits"] or 0),
        "reranker_failed_fits": status["reranker_failed_fits"],
        # ...and what they took in that process (on top of worker_cpu_s)
        "reranker_fit_s": round(
            (status["reranker_fit_s"] or 0) - (before["reranker_fit_s"] or 0), 2
        ),
        "onnx_spinning": s.onnx_spinning,
        "note": "burst: latency includes queueing behind the burst, not steady-state latency",
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

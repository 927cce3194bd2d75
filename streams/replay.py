"""The replay evaluation through Kafka end to end (``streamrec evaluate --through-kafka``).

The in-process replay (:mod:`models.evaluation`) calls the pipeline directly, for speed. This
one checks what people would actually be shown: it starts the embedded broker and a worker
(:class:`~streams.stack.LocalStack`), publishes the catalog, links every user across the
dataset's platforms (an ``identify`` event with consent before their first event on each),
sends the events in stream order as an app would, and reads every recommendation from the
output topic. :func:`models.evaluation.served_run` then ranks each target in the list the
person had last been shown on that platform.

Timestamps are shifted so the newest event is now (the worker refuses events from the future
and, beyond ``max_past_age_s``, from the past; that limit is raised to the dataset's span).
"""

from __future__ import annotations

import time
from pathlib import Path

from models.datasets import Dataset
from models.errors import StreamrecError
from models.evaluation import Run, served_run
from models.events import EventType, item_key
from streams.broker import EmbeddedBroker
from streams.client import EventProducer, RecommendationSubscriber
from streams.settings import Settings
from streams.stack import LocalStack


def kafka_replay(
    dataset: Dataset,
    artifacts: Path,
    progress: bool = True,
    *,
    settings: Settings | None = None,
    broker: EmbeddedBroker | None = None,
    catalog_timeout_s: float = 1800.0,
    wait_s: float = 30.0,
) -> Run:
    """Replay ``dataset`` through a local broker and worker; the served lists, scored.

    ``settings``/``broker``: the topics and broker to use (default: fresh ones). A list that
    does not arrive within ``wait_s`` of its event is an error: the stream lost it."""
    events = dataset.events
    if not events:
        raise StreamrecError("nothing to replay: the dataset has no events")
    newest = max(e.ts for e in events)
    shift = time.time() - 1.0 - newest
    span = newest - min(e.ts for e in events)
    settings = (settings or Settings()).model_copy(
        update={
            "platforms": tuple(dataset.platforms),
            "artifacts_dir": artifacts,
            "max_past_age_s": span + 7 * 86400.0,
        }
    )
    multi_platform = len(dataset.platforms) > 1
    with LocalStack(settings, broker=broker) as stack:
        assert stack.worker is not None
        producer = EventProducer(stack.settings, linger_ms=5)
        for item in dataset.items:
            producer.send_item(item)
        producer.flush()
        _say(progress, f"kafka replay: indexing {len(dataset.items)} catalog items in the worker")
        stack.worker.wait_for_catalog(len(dataset.items), timeout_s=catalog_timeout_s)
        subscriber = RecommendationSubscriber(stack.settings, from_beginning=True)
        lists: dict[str, list[str]] = {}
        waiting: dict[str, str] = {}  # user → the event whose list they wait for

        def receive(timeout_s: float) -> None:
            for rec in subscriber.recommendations(timeout_s=timeout_s):
                lists[rec.event_id] = [item_key(s.platform, s.item) for s in rec.items]
                if waiting.get(rec.user) == rec.event_id:
                    del waiting[rec.user]

        start = time.perf_counter()
        linked: set[tuple[str, str]] = set()
        for n, e in enumerate(events):
            # A person acts after seeing the list for their last event: otherwise the worker
            # would learn their next event in the same batch and rank the earlier one with it.
            if e.user in waiting:
                producer.flush()
                deadline = time.monotonic() + wait_s
                while e.user in waiting and time.monotonic() < deadline:
                    receive(0.01)
                if e.user in waiting:
                    break
            ts = e.ts + shift
            if multi_platform and (e.user, e.platform) not in linked:
                linked.add((e.user, e.platform))
                producer.send(
                    {
                        "event_id": f"link-{e.platform}-{e.user}",
                        "type": EventType.IDENTIFY.value,
                        "platform": e.platform,
                        "user": e.user,
                        "ts": ts,
                        "person": e.user,
                        "consent": True,
                    }
                )
            producer.send(e.model_copy(update={"ts": ts}))
            if e.item is not None:
                waiting[e.user] = e.event_id
            if progress and n % 10_000 == 9_999:
                _say(progress, f"kafka replay: {n + 1}/{len(events)} events sent")
        producer.flush()
        deadline = time.monotonic() + wait_s
        while waiting and time.monotonic() < deadline:
            receive(0.5)
        seconds = time.perf_counter() - start
        subscriber.close()
        producer.close()
        if waiting:  # raised inside the stack, which then keeps its logs
            lost = sorted(waiting.values())
            raise StreamrecError(
                f"no recommendation within {wait_s:.0f}s for {len(lost)} events "
                f"(e.g. {lost[:3]}); see the worker log in {stack.workdir}"
            )
    _say(progress, f"kafka replay: {len(lists)} recommendations for {len(events)} events")
    return served_run(dataset, lists, seconds)


def _say(progress: bool, line: str) -> None:
    if progress:
        print(line, flush=True)

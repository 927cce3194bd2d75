"""The replay through Kafka end to end: every event's list arrives and is scored as shown."""

from __future__ import annotations

from pathlib import Path

from models.datasets import Dataset
from models.events import CatalogItem, Event, EventType
from streams.broker import EmbeddedBroker
from streams.replay import kafka_replay

from .conftest import WORLD, _delete_topics, unique_settings


def two_platform_dataset() -> Dataset:
    """Ten people, each into one theme, buying its items on the shop and the video app in
    turns: what they did on one platform predicts the other (they are linked, with consent)."""
    items = [CatalogItem(**it) for it in WORLD.items if it["platform"] in ("shop", "video")]
    themes = sorted(set(WORLD.theme_of.values()))
    by_theme = {
        (t, p): [it.item for it in items if WORLD.theme_of[p, it.item] == t and it.platform == p]
        for t in themes
        for p in ("shop", "video")
    }
    events = [
        Event(
            event_id=f"e{step}-{person}",
            type=EventType.PURCHASE,
            platform=("shop", "video")[step % 2],
            user=f"u{person}",
            ts=1_000.0 + 60.0 * step + person,
            item=by_theme[themes[person % len(themes)], ("shop", "video")[step % 2]][step // 2],
        )
        for step in range(6)
        for person in range(10)
    ]
    return Dataset("toy", items, events, [True] * len(events))


def test_every_event_gets_its_list_and_targets_are_ranked_in_what_was_shown(
    broker: EmbeddedBroker, serving_artifacts: Path
) -> None:
    ds = two_platform_dataset()
    settings = unique_settings(serving_artifacts)
    try:
        run = kafka_replay(ds, serving_artifacts, False, settings=settings, broker=broker)
    finally:
        _delete_topics(broker.bootstrap, settings)
    assert run.model == "blend-kafka"
    assert [h.index for h in run.hits] == list(range(len(ds.events)))
    # a person's first event on a platform had no list before it; every later one did
    first_here = [h for h in run.hits if h.index < 20]
    assert all(h.rank == 0 for h in first_here)
    later = [h for h in run.hits if h.index >= 20]
    # their theme's items on that platform are 6 of 72: random lists would hit ~14 %
    assert sum(0 < h.rank <= 10 for h in later) / len(later) > 0.5
    assert run.top10.keys() == {"shop", "video"}

"""Fine-tuning the encoder on what people chose next: the pairs, the check, what is published."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from export.adapt import AdaptSpec, adapt, check_histories, held_out, next_item_pairs
from models.artifacts import read_spec
from models.encoder import ENCODER_NAME
from models.errors import ExportValidationError
from models.events import CatalogItem, Event, EventType

FRUITS = ["apple", "pear", "plum", "cherry", "grape", "melon", "peach", "lemon"]
TOOLS = ["hammer", "wrench", "chisel", "screwdriver", "pliers", "saw", "drill", "spanner"]


def _event(user: str, item: str, n: int) -> Event:
    return Event(
        event_id=f"{user}-{n}", type=EventType.PURCHASE, platform="shop", user=user, item=item, ts=n
    )


def _world(persons: int = 160, seed: int = 0) -> tuple[list[CatalogItem], list[Event]]:
    """Everyone buys a fruit, then the tool that goes with it (the i-th of each list): texts
    that say nothing alike, chosen one after the other."""
    items = [CatalogItem(item=w, platform="shop", title=f"fresh {w}") for w in FRUITS]
    items += [CatalogItem(item=w, platform="shop", title=f"steel {w}") for w in TOOLS]
    rng = random.Random(seed)
    events = []
    for p in range(persons):
        i = rng.randrange(len(FRUITS))
        events.append(_event(f"p{p}", FRUITS[i], 2 * p))
        events.append(_event(f"p{p}", TOOLS[i], 2 * p + 1))
    return items, events


def test_pairs_are_consecutive_positives_of_one_person_on_one_platform() -> None:
    events = [
        _event("ann", "a", 0),
        _event("bob", "x", 1),
        Event(event_id="r", type=EventType.RATING, platform="shop", user="ann", item="b", ts=2,
              value=2.0),  # a low rating is not a positive: no pair
        _event("ann", "c", 3),
        Event(event_id="v", type=EventType.PURCHASE, platform="video", user="ann", item="d", ts=4),
        _event("ann", "e", 5),
        _event("bob", "y", 6),
    ]
    assert next_item_pairs(events) == [("shop:a", "shop:c"), ("shop:c", "shop:e"),
                                       ("shop:x", "shop:y")]


def test_the_check_uses_only_held_out_persons_last_new_item() -> None:
    users = [f"u{i}" for i in range(400)]
    kept = [u for u in users if held_out(u, 0.1)]
    assert 20 < len(kept) < 60  # about a tenth, by a hash
    assert kept == [u for u in users if held_out(u, 0.1)]
    events = []
    for n, u in enumerate(users):
        events += [_event(u, "a", 3 * n), _event(u, "b", 3 * n + 1)]
        events.append(_event(u, "a" if n % 2 else "c", 3 * n + 2))  # half repeat an item
    checked = check_histories(events, 0.1)
    assert checked == [(["shop:a", "shop:b"], "shop:c")] * sum(
        1 for n, u in enumerate(users) if held_out(u, 0.1) and n % 2 == 0
    )


@pytest.mark.export
def test_fine_tuning_learns_what_comes_next_and_is_published(tmp_path: Path) -> None:
    from export.encoder import EncoderExportSpec, export_encoder

    items, events = _world()
    spec = AdaptSpec(steps=12, batch=8, learning_rate=2e-4, holdout_share=0.25, recent=1)
    record = adapt(items, events, tmp_path / "tuned", spec, progress=False)
    # before: a fruit's nearest items are the other fruits, so the tool bought next ranks low
    assert record["check_ndcg@10_after"] > record["check_ndcg@10_before"] + 0.1, record
    assert record["pairs"] == sum(1 for e in events[1::2] if not held_out(e.user, 0.25))
    assert record["steps"] == 12 and record["pairs_seen"] == 96

    version = export_encoder(
        tmp_path / "artifacts",
        EncoderExportSpec(validation_cases=((3, 20),)),
        progress=False,
        adapted=(tmp_path / "tuned", record),
    )
    published = read_spec(tmp_path / "artifacts", ENCODER_NAME, version)
    assert published["source"]["adapted"] == record
    assert published["max_seq_length"] == spec.max_seq_length
    assert published["max_abs_diff"] <= 1e-4


@pytest.mark.export
def test_a_fine_tuning_that_ranks_no_better_is_refused(tmp_path: Path) -> None:
    items, events = _world()
    spec = AdaptSpec(steps=2, batch=8, learning_rate=1e-12, holdout_share=0.25, recent=1)
    with pytest.raises(ExportValidationError, match="no better"):
        adapt(items, events, tmp_path / "tuned", spec, progress=False)
    assert not (tmp_path / "tuned").exists()

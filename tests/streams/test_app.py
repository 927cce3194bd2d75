"""The worker's pipeline as ``streamrec worker`` loads it (no broker needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from models.catalog import _search_session
from models.errors import InvalidEventError
from models.events import CatalogItem, Event, EventType
from models.pipeline import PersonEvent, Pipeline
from models.session import SessionState
from streams.app import add_items_or_report, handle_or_retry, index_if_stored, load_pipeline
from streams.codecs import encode_catalog_entry
from streams.settings import Settings
from tests.fakes import HashingEncoder, fail_learning_for
from tests.streams.conftest import unique_settings


def _spins(session: ort.InferenceSession) -> str:
    options = session.get_session_options()
    return options.get_session_config_entry("session.intra_op.allow_spinning")


@pytest.mark.parametrize("spinning", [False, True])
def test_the_workers_onnx_sessions_spin_only_when_set(
    sequence_artifacts: Path, spinning: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = unique_settings(sequence_artifacts).model_copy(update={"onnx_spinning": spinning})
    if not spinning:
        assert settings.onnx_spinning is Settings().onnx_spinning  # off by default
    pipeline = load_pipeline(settings)
    assert pipeline.ranker is not None and pipeline.sequence is not None
    catalog = pipeline.catalog
    sessions = [
        pipeline.encoder._session,  # type: ignore[attr-defined]
        pipeline.ranker._session,  # type: ignore[attr-defined]
        pipeline.ranker._item_tower,  # type: ignore[attr-defined]
        pipeline.sequence._session,  # type: ignore[attr-defined]
        pipeline.sequence._item_tower,  # type: ignore[attr-defined]
    ]
    # the text search's session: the one a search through the catalog actually runs on
    searched: list[ort.InferenceSession] = []

    def spy(threads: int, spin: bool) -> ort.InferenceSession:
        searched.append(_search_session(threads, spin))
        return searched[-1]

    monkeypatch.setattr("models.catalog._search_session", spy)
    dim = catalog.vectors.shape[1]
    catalog.masked_search(np.ones((1, dim), np.float32), np.zeros((3, dim + 1), np.float32), 2)
    sessions += searched
    assert len(searched) == 1
    assert [_spins(s) for s in sessions] == ["1" if spinning else "0"] * len(sessions)


def test_an_item_in_the_catalog_table_but_not_indexed_yet_is_indexed_for_its_event() -> None:
    """After a restart the table's entries are indexed by a timer: an event for one of them
    in the meantime must be served, not dead-lettered as "unknown item"."""
    pipeline = Pipeline(HashingEncoder(dim=8), ranker=None)
    boots = CatalogItem(item="boots", platform="shop", title="hiking boots")
    stored = {boots.key: encode_catalog_entry(boots, np.ones(8, np.float32))}
    event = Event(
        event_id="e1", type=EventType.VIEW, platform="shop", user="u", ts=1.0, item="boots"
    )
    with pytest.raises(InvalidEventError, match="unknown item"):
        pipeline.check_event(event)
    index_if_stored(pipeline, stored, event)
    pipeline.check_event(event)
    assert pipeline.catalog.vector("shop:boots").tolist() == [1.0] * 8
    unknown = event.model_copy(update={"item": "sandals"})
    index_if_stored(pipeline, stored, unknown)
    with pytest.raises(InvalidEventError, match="unknown item"):
        pipeline.check_event(unknown)


class FailsOnBoom(HashingEncoder):
    """An encoder that cannot take one text (none is known to break the real one)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if any("boom" in t for t in texts):
            raise RuntimeError("the encoder failed")
        return super().encode(texts)


def test_an_item_the_encoder_cannot_take_loses_no_other_item_of_its_batch() -> None:
    pipeline = Pipeline(FailsOnBoom(dim=8), ranker=None)
    items = [
        CatalogItem(item=name, platform="shop", title=f"{name} hiking")
        for name in ("boots", "boom", "socks")
    ]
    indexed = add_items_or_report(pipeline, items)
    assert [vector is not None for vector, _ in indexed] == [True, False, True]
    assert indexed[1][1] == "processing failed: RuntimeError: the encoder failed"
    assert "shop:boots" in pipeline.catalog and "shop:socks" in pipeline.catalog
    assert "shop:boom" not in pipeline.catalog


def test_a_catalog_table_entry_that_cannot_be_decoded_is_counted_not_raised() -> None:
    pipeline = Pipeline(HashingEncoder(dim=8), ranker=None)
    event = Event(
        event_id="e1", type=EventType.VIEW, platform="shop", user="u", ts=1.0, item="boots"
    )
    for corrupt in (b"{", b'{"item": {}, "vector": "AAAA"}', b'{"vector": "!!"}'):
        index_if_stored(pipeline, {"shop:boots": corrupt}, event)
    assert pipeline.stats["catalog_entries_skipped"] == 3 and len(pipeline.catalog) == 0


def test_a_batch_that_fails_on_a_bug_is_served_message_by_message_learning_each_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pipeline = Pipeline(HashingEncoder(dim=8), ranker=None)
    pipeline.add_items(
        [CatalogItem(item=name, platform="shop", title=f"{name} hiking") for name in "abc"]
    )

    def bought(person: str, item: str, ts: float) -> PersonEvent:
        return PersonEvent(
            f"shop:{person}",
            Event(
                event_id=f"e{ts:g}",
                type=EventType.PURCHASE,
                platform="shop",
                user=person,
                ts=ts,
                item=item,
            ),
        )

    batch = [bought("u", "a", 1.0), bought("v", "b", 2.0), bought("w", "c", 3.0)]
    fail_learning_for(monkeypatch, pipeline, "shop:w")
    sessions: dict[str, SessionState] = {}
    out = handle_or_retry(pipeline, batch, sessions, now=0.0)
    assert out.rejected == [(batch[2], "processing failed: RuntimeError: a bug, not bad input")]
    assert [r.user for r in out.recommendations] == ["u", "v"]
    assert sorted(sessions) == ["shop:u", "shop:v"]
    clean = Pipeline(HashingEncoder(dim=8), ranker=None)
    clean.add_items(
        [CatalogItem(item=name, platform="shop", title=f"{name} hiking") for name in "abc"]
    )
    clean.handle(batch[:2], {}, now=0.0)
    assert pipeline.stats["events"] == clean.stats["events"] == 2  # each learned once
    for key in ("shop:a", "shop:b"):
        assert pipeline.popularity.predict_one(key, ts=3.0) == clean.popularity.predict_one(
            key, ts=3.0
        )

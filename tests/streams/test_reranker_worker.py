"""A running worker fits its reranker beside the stream and says so on ``/status``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streams.broker import EmbeddedBroker
from streams.stack import LocalStack

from .conftest import WORLD, Harness, _delete_topics, unique_settings

pytestmark = pytest.mark.integration


def test_the_worker_fits_its_reranker_in_another_process_and_reports_it(
    broker: EmbeddedBroker, serving_artifacts: Path, tmp_path: Path
) -> None:
    # a fit every 3 answered lists: a person who keeps clicking the list's first item
    settings = unique_settings(serving_artifacts).model_copy(
        update={"pipeline": ("rerank_every=3",)}
    )
    items = [i for i in WORLD.items if i["platform"] == "shop"]
    with LocalStack(settings, workdir=tmp_path / "stack", broker=broker) as stack:
        assert stack.worker is not None
        h = Harness(stack)
        h.load_catalog(items)
        before = stack.worker.status()
        assert (before["reranker_fits"], before["reranker_fit_s"]) == (0, 0.0)
        shown = items[0]["item"]
        deadline = time.monotonic() + 60
        status = before
        while status["reranker_fits"] == 0 and time.monotonic() < deadline:
            e = h.event("shop", "rita", "click", item=shown)
            rec = h.wait_for([e["event_id"]])[e["event_id"]]
            shown = rec.items[0].item  # the next click answers this list
            status = stack.worker.status()
        h.close()
    _delete_topics(broker.bootstrap, settings)
    assert status["reranker_fits"] >= 1 and status["reranker_failed_fits"] == 0
    assert status["reranker_fit_s"] > 0

"""A newly published ranking head or sequence model is served without restarting the worker."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from models.artifacts import MODEL_FILE, current_dir, publish
from streams.broker import EmbeddedBroker
from streams.stack import LocalStack

from .conftest import WORLD, Harness, unique_settings

pytestmark = pytest.mark.integration


def republish_as_new_version(root: Path, name: str) -> str:
    """Same weights, different bytes (a doc string): a new content-hashed version."""
    onnx = pytest.importorskip("onnx")
    src = current_dir(root, name)
    staged = root / "staging"
    shutil.copytree(src, staged)
    model = onnx.load(str(staged / MODEL_FILE))
    model.doc_string = f"republished {time.time()}"
    onnx.save(model, str(staged / MODEL_FILE))
    spec = json.loads((staged / "spec.json").read_text())
    return publish(root, name, staged, spec)


@contextmanager
def shop_worker(
    broker: EmbeddedBroker, serving_artifacts: Path, tmp_path: Path
) -> Iterator[tuple[Path, Callable[[], dict[str, str]]]]:
    """A worker on a copy of the artifacts (polled every 0.5 s) with the shop's catalog
    loaded; yields the copy and a function that sends an event and returns the model
    versions its recommendation names."""
    artifacts = tmp_path / "artifacts"
    shutil.copytree(serving_artifacts, artifacts)
    settings = unique_settings(artifacts).model_copy(update={"model_poll_s": 0.5})
    with LocalStack(settings, workdir=tmp_path / "stack", broker=broker) as stack:
        h = Harness(stack)
        items = [i for i in WORLD.items if i["platform"] == "shop"]
        h.load_catalog(items)
        assert stack.worker is not None

        def served() -> dict[str, str]:
            e = h.event("shop", "hana", "view", item=items[0]["item"])
            return h.wait_for([e["event_id"]])[e["event_id"]].model_versions

        yield artifacts, served
        # what the worker reports is what it served last
        assert stack.worker.status()["model_versions"] == served()
        h.close()


def wait_until_served(served: Callable[[], dict[str, str]], name: str, version: str) -> None:
    deadline = time.monotonic() + 20
    while served().get(name) != version and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served().get(name) == version


def test_new_ranker_version_is_served_without_restart(
    broker: EmbeddedBroker, serving_artifacts: Path, tmp_path: Path
) -> None:
    with shop_worker(broker, serving_artifacts, tmp_path) as (artifacts, served):
        old = served()["ranker"]
        new = republish_as_new_version(artifacts, "ranker")
        assert new != old
        wait_until_served(served, "ranker", new)


def test_a_published_sequence_model_is_taken_up_and_swapped_without_restart(
    broker: EmbeddedBroker, serving_artifacts: Path, sequence_artifacts: Path, tmp_path: Path
) -> None:
    """The worker starts without the optional sequence model, refuses one trained on another
    encoder's vectors, serves one once it is published, and a newer one after that."""
    with shop_worker(broker, serving_artifacts, tmp_path) as (artifacts, served):
        assert "sequence" not in served()
        staged, spec = _staged_copy(sequence_artifacts, artifacts)
        publish(artifacts, "sequence", staged, {**spec, "encoder_version": "encoder-other"})
        time.sleep(2.0)  # four polls
        assert "sequence" not in served()
        first = publish(artifacts, "sequence", *_staged_copy(sequence_artifacts, artifacts))
        wait_until_served(served, "sequence", first)
        wait_until_served(served, "sequence", republish_as_new_version(artifacts, "sequence"))


def _staged_copy(source_root: Path, root: Path) -> tuple[Path, dict[str, Any]]:
    """The current sequence model of ``source_root``, staged under ``root`` with its spec."""
    staged = root / "staging"
    shutil.copytree(current_dir(source_root, "sequence"), staged)
    return staged, json.loads((staged / "spec.json").read_text())

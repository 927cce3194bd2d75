"""Shared fixtures: exported models (once per session) and the embedded broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from export.ranker import RankerExportSpec
from export.sequence import SequenceExportSpec
from streams.broker import EmbeddedBroker

# Small enough to train in seconds; the shipped default uses export.ranker.DEFAULT_SPEC.
TEST_RANKER_SPEC = RankerExportSpec(persons=400, events_per_person=12, epochs=8, patience=2)
TEST_SEQUENCE_SPEC = SequenceExportSpec(
    persons=300, events_per_person=15, epochs=4, patience=2, batch=256, hidden=32
)


@pytest.fixture(scope="session")
def encoder_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Artifacts root holding one published encoder (exported once per session, ~15 s).

    Skips when the ``export`` extra (torch) is not installed.
    """
    pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    from export.encoder import export_encoder

    root = tmp_path_factory.mktemp("artifacts")
    export_encoder(root, progress=False)
    return root


@pytest.fixture(scope="session")
def serving_artifacts(encoder_artifacts: Path) -> Path:
    """The encoder plus a ranking head trained on simulated data: what a worker serves."""
    from export.ranker import export_ranker

    export_ranker(encoder_artifacts, TEST_RANKER_SPEC, progress=False)
    return encoder_artifacts


@pytest.fixture(scope="session")
def sequence_artifacts(serving_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of :func:`serving_artifacts` plus a sequence model trained on simulated data
    (the optional component)."""
    import shutil

    from export.sequence import export_sequence

    root = tmp_path_factory.mktemp("sequence") / "artifacts"
    shutil.copytree(serving_artifacts, root)
    export_sequence(root, TEST_SEQUENCE_SPEC, progress=False)
    return root


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One real Kafka-protocol broker (Tansu) for the session; tests use unique topics."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_file=log) as b:
        yield b

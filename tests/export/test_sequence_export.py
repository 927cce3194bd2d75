"""The sequence model: trained on simulated sequences, exported, validated against torch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from export.sequence import SequenceExportSpec, Sequences, grouped, sequences_from
from models.artifacts import read_spec
from models.errors import ExportError, ModelLoadError
from models.events import CatalogItem
from models.sequence import SequenceModel

from ..conftest import TEST_SEQUENCE_SPEC

pytestmark = pytest.mark.export


def test_published_model_matches_torch_and_learned(sequence_artifacts: Path) -> None:
    spec = read_spec(sequence_artifacts, "sequence")
    assert spec["validation_max_abs_diff"].keys() == {"batch_1", "batch_5", "batch_77"}
    assert max(spec["validation_max_abs_diff"].values()) <= spec["atol"] == 1e-5
    assert spec["length"] == TEST_SEQUENCE_SPEC.length == 20
    metrics = spec["metrics"]
    trained, untrained = metrics["test_ndcg10"], metrics["test_ndcg10_untrained"]
    # the test persons' last items (used for neither fitting nor stopping) rank better than
    # with the untrained model (the sum of the same-platform history, raw text space)
    assert np.mean(list(trained.values())) > np.mean(list(untrained.values()))


def test_serving_runtime_gives_unit_queries_for_any_batch(sequence_artifacts: Path) -> None:
    model = SequenceModel.from_artifacts(sequence_artifacts)
    assert (model.length_same, model.length_other) == (15, 5)
    rng = np.random.default_rng(0)
    histories = [_unit(rng.standard_normal((n, model.dim))) for n in (0, 1, 7, 40)]
    flags = [rng.integers(0, 2, len(h)) for h in histories]
    queries = model.queries(histories, flags)
    assert queries.shape == (4, model.dim)
    assert np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    # a request's query depends on its own history only
    alone = model.queries(histories[2:3], flags[2:3])
    assert np.allclose(alone[0], queries[2], atol=1e-6)
    # only the last ``length`` items count
    longer = np.concatenate([histories[3][:5], histories[3]])
    again = model.queries([longer], [np.concatenate([flags[3][:5], flags[3]])])
    assert np.allclose(again[0], queries[3], atol=1e-6)
    items = model.item_vectors(_unit(rng.standard_normal((9, model.dim))))
    assert items.shape == (9, model.dim)
    assert np.allclose(np.linalg.norm(items, axis=1), 1.0, atol=1e-5)
    assert model.queries([], []).shape == (0, model.dim)
    encoder = read_spec(sequence_artifacts, "encoder")["version"]
    assert model.check_encoder(encoder) is model
    with pytest.raises(ModelLoadError, match=r"trained on .* re-export the sequence model"):
        model.check_encoder("encoder-000000000000")


def test_slots_hold_the_last_items_elsewhere_then_the_last_here() -> None:
    spec = SequenceExportSpec(length_same=2, length_other=1)
    platform = np.array([0, 1, 0, 1, 0])
    # rows 0..4 in time order; the target is on platform 0
    assert grouped(np.arange(5), platform, 0, spec).tolist() == [3, 2, 4]
    assert grouped(np.array([1]), platform, 0, spec).tolist() == [-1, -1, 1]
    assert grouped(np.zeros(0, np.int64), platform, 1, spec).tolist() == [-1, -1, -1]


def test_sequences_keep_each_persons_order_and_skip_unknown_items() -> None:
    items = [CatalogItem(item=str(i), platform=p, title=f"t{i}") for i, p in enumerate("aab")]
    vectors = np.eye(3, dtype=np.float32)
    keyed = [
        ("x", "a:0", True),
        ("y", "b:2", True),
        ("x", "b:2", False),
        ("x", "a:9", True),
        ("x", "a:1", True),
        ("z", "a:0", True),
    ]
    seqs = sequences_from(keyed, items, vectors)
    assert seqs.platforms == ["a", "b"] and seqs.platform.tolist() == [0, 0, 1]
    # x: 0, 2, 1 (a:9 is unknown); y and z have one item each: nothing to learn from
    assert [s.tolist() for s in seqs.persons] == [[0, 2, 1]]
    assert [c.tolist() for c in seqs.consumed] == [[True, False, True]]


def test_an_item_consumed_before_is_neither_a_target_nor_ranked() -> None:
    """Serving never ranks what the person consumed: such a position is no training example
    and no evaluation case, and a case ranks its target against the platform minus what the
    person consumed (a viewed item stays rankable)."""
    from export.sequence import _examples, _leave_last

    platform = np.array([0, 0, 0, 1])
    seqs = Sequences(
        np.eye(4, dtype=np.float32),
        platform,
        [np.array([0, 1, 0, 2, 1]), np.array([3, 0, 3])],
        ["a", "b"],
        [np.array([True, False, False, True, False]), np.array([False, True, False])],
    )
    spec = SequenceExportSpec(length_same=2, length_other=1)
    _, targets = _examples(seqs, [0, 1], spec)
    # person 0: 1, (0 consumed at t=0: no), 2, 1 (only viewed before); person 1: 0, 3
    assert targets.tolist() == [1, 2, 1, 0, 3]
    cases = _leave_last(seqs, [0, 1])
    assert [(h.tolist(), t, c.tolist()) for h, t, c in cases] == [
        ([0, 1, 0, 2], 1, [0, 2]),  # person 0's last on platform 0: viewed before, not bought
        ([3], 0, []),  # person 1's last on platform 0
        ([3, 0], 3, [0]),  # ...and on platform 1: only viewed before
    ]
    seqs.consumed[1][0] = True  # bought 3 first: their last 3 is no case
    assert [t for _, t, _ in _leave_last(seqs, [1])] == [0]


def test_training_needs_people_to_learn_from() -> None:
    from export.sequence import train

    seqs = Sequences(np.eye(2, dtype=np.float32), np.zeros(2, np.int64), [], ["a"], [])
    with pytest.raises(ExportError, match="too few to train on"):
        train(seqs, dataclasses.replace(TEST_SEQUENCE_SPEC, epochs=1))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_a_replay_takes_the_sequence_model_only_where_it_is_published(
    serving_artifacts: Path, sequence_artifacts: Path
) -> None:
    from models.evaluation import ReplaySource

    def source(**kw: object) -> ReplaySource:
        return ReplaySource("generic", None, **kw)  # type: ignore[arg-type]

    assert source(artifacts=serving_artifacts).load_sequence() is None
    version = read_spec(sequence_artifacts, "sequence")["version"]
    taken = source(artifacts=serving_artifacts, sequence_artifacts=sequence_artifacts)
    assert (model := taken.load_sequence()) is not None and model.version == version
    assert (model := source(artifacts=sequence_artifacts).load_sequence()) is not None
    assert source(artifacts=sequence_artifacts, use_sequence=False).load_sequence() is None


def test_a_generic_dataset_trains_it_on_its_train_file_only(
    sequence_artifacts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from export.sequence import dataset_sequences
    from models.encoder import TextEncoder

    monkeypatch.chdir(tmp_path)  # the item vectors' cache goes to ./.cache
    data = tmp_path / "shop"
    data.mkdir()
    words = ["red wool", "blue silk", "desk lamp", "ink pen"]
    (data / "items.csv").write_text(
        "item,platform,text\n" + "".join(f"i{i},shop,{w} {i}\n" for i, w in enumerate(words))
    )
    header = "time,platform,person,item,type,value\n"
    (data / "events.csv").write_text(header + "1,shop,ev,i0,,\n2,shop,ev,i1,,\n")
    encoder = TextEncoder.from_artifacts(sequence_artifacts)
    with pytest.raises(ExportError, match="every event is evaluated"):
        dataset_sequences(encoder, "generic", data, "", progress=False)
    (data / "train.csv").write_text(header + "1,shop,tr,i2,,\n2,shop,tr,i3,,\n3,shop,tr,i0,,\n")
    seqs = dataset_sequences(encoder, "generic", data, "", progress=False)
    assert [s.tolist() for s in seqs.persons] == [[2, 3, 0]]  # the train person's only
    assert seqs.vectors.shape == (4, encoder.dim)

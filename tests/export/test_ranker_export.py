"""The ranking head: trained on replayed simulated data, exported, validated against torch."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from models.artifacts import current_dir, read_spec
from models.errors import ExportValidationError, ModelLoadError
from models.ranker import DENSE_FEATURES, ITEM_TOWER_FILE, RankingHead

from ..conftest import TEST_RANKER_SPEC

pytestmark = pytest.mark.export


def test_published_head_matches_torch_and_beats_content_alone(serving_artifacts: Path) -> None:
    spec = read_spec(serving_artifacts, "ranker")
    assert spec["dense_features"] == list(DENSE_FEATURES)
    assert spec["validation_max_abs_diff"].keys() == {"batch_1", "batch_7", "batch_333"}
    assert max(spec["validation_max_abs_diff"].values()) <= spec["atol"] == 1e-5
    auc = spec["metrics"]["auc"]
    # It must learn something beyond its strongest single input, also on the held-out platform.
    assert auc["valid"] > spec["metrics"]["auc_content_similarity_alone"]["valid"]
    assert auc["holdout"] > 0.7


def test_serving_runtime_scores_any_number_of_requests_and_candidates(
    serving_artifacts: Path,
) -> None:
    head = RankingHead.from_artifacts(serving_artifacts)
    rng = np.random.default_rng(0)
    for requests, n in ((1, 1), (2, 5), (7, 1000)):
        # unit vectors, like the encoder's (unnormalised ones saturate the sigmoid to 1.0)
        person, context = (_unit(rng.standard_normal((requests, 384))) for _ in "pc")
        item = _unit(rng.standard_normal((n, 384)))
        dense = rng.random((n, len(DENSE_FEATURES)), dtype=np.float32)
        request = np.sort(rng.integers(0, requests, n))
        hidden = head.item_hidden(item)
        assert hidden.shape == (n, head.hidden)
        scores = head.score(person, context, hidden, dense, request)
        assert scores.shape == (n,) and ((scores > 0) & (scores < 1)).all()
        # a candidate's score depends on its own request's person only, and the item tower
        # on the item only: the first and the last candidate scored alone (the last belongs
        # to a later request when there are several)
        for j in (0, n - 1):
            alone = head.score(
                person[request[j : j + 1]],
                context[request[j : j + 1]],
                head.item_hidden(item[j : j + 1]),
                dense[j : j + 1],
                np.zeros(1, np.int64),
            )
            assert np.allclose(alone, scores[j : j + 1], atol=1e-6)
        assert requests == 1 or request[-1] > 0
    empty = np.zeros((0, 384), np.float32)
    no_hidden = head.item_hidden(empty)
    assert no_hidden.shape == (0, head.hidden)
    assert head.score(empty, empty, no_hidden, np.zeros((0, 7), np.float32), np.zeros(0)).size == 0


def test_head_trained_on_another_encoders_vectors_is_refused(serving_artifacts: Path) -> None:
    head = RankingHead.from_artifacts(serving_artifacts)
    encoder = read_spec(serving_artifacts, "encoder")["version"]
    assert head.check_encoder(encoder) is head
    with pytest.raises(ModelLoadError, match=r"trained on .* re-export the ranker"):
        head.check_encoder("encoder-000000000000")


def test_head_without_its_item_tower_is_refused(serving_artifacts: Path, tmp_path: Path) -> None:
    import shutil

    src = current_dir(serving_artifacts, "ranker")
    dst = tmp_path / "ranker" / src.name
    shutil.copytree(src, dst)
    (dst / ITEM_TOWER_FILE).unlink()
    with pytest.raises(ModelLoadError, match=r"no item_tower\.onnx .*re-export the ranker"):
        RankingHead(dst)


def test_head_with_other_features_is_refused(serving_artifacts: Path, tmp_path: Path) -> None:
    import shutil

    src = current_dir(serving_artifacts, "ranker")
    dst = tmp_path / "ranker" / src.name
    shutil.copytree(src, dst)
    spec = json.loads((dst / "spec.json").read_text())
    spec["dense_features"] = ["content", "popularity"]
    (dst / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ModelLoadError, match="re-export the ranker"):
        RankingHead(dst)


def test_head_with_another_dense_width_is_refused(serving_artifacts: Path, tmp_path: Path) -> None:
    import shutil

    import torch

    from export.ranker import build_head, serving_graph

    src = current_dir(serving_artifacts, "ranker")
    dst = tmp_path / "ranker" / src.name
    shutil.copytree(src, dst)
    wide = len(DENSE_FEATURES) + 1
    example = (*(torch.randn(4, n) for n in (384, 384, 8, wide)), torch.arange(4))
    torch.onnx.export(
        serving_graph(build_head(8, 384, wide)),
        example,
        str(dst / "model.onnx"),
        input_names=["person", "context", "item_hidden", "dense", "request"],
        output_names=["score"],
        dynamo=False,
    )
    with pytest.raises(ModelLoadError, match=f"passes {len(DENSE_FEATURES)} features"):
        RankingHead(dst)
    # a head exported before person/context went per request (one row per candidate)
    torch.onnx.export(
        build_head(8, 384, len(DENSE_FEATURES)),
        tuple(torch.randn(4, n) for n in (384, 384, 384, len(DENSE_FEATURES))),
        str(dst / "model.onnx"),
        input_names=["person", "item", "context", "dense"],
        output_names=["score"],
        dynamo=False,
    )
    with pytest.raises(ModelLoadError, match=r"takes inputs .*re-export the ranker"):
        RankingHead(dst)


def test_impossible_tolerance_fails_the_export_and_publishes_nothing(
    serving_artifacts: Path, tmp_path: Path
) -> None:
    from export.ranker import export_ranker

    root = tmp_path / "artifacts"
    shutil_copy_encoder(serving_artifacts, root)
    strict = dataclasses.replace(TEST_RANKER_SPEC, atol=1e-15, epochs=1, persons=60)
    with pytest.raises(ExportValidationError, match="differs from torch"):
        export_ranker(root, strict, progress=False)
    assert not (root / "ranker" / "CURRENT").exists()
    assert [p.name for p in root.iterdir()] == ["encoder"], "a failed export left files behind"


def shutil_copy_encoder(src_root: Path, dst_root: Path) -> None:
    import shutil

    shutil.copytree(src_root / "encoder", dst_root / "encoder")


def test_denormal_weights_are_flushed_before_export() -> None:
    import torch

    from export.ranker import build_head, flush_denormals

    head = build_head(4, 8, len(DENSE_FEATURES))
    with torch.no_grad():
        head.item[0].weight[0, 0] = 1e-40  # denormal in float32
        head.item[0].weight[0, 1] = 0.5
    assert flush_denormals(head) == 1
    assert head.item[0].weight[0, 0].item() == 0.0 and head.item[0].weight[0, 1].item() == 0.5
    assert flush_denormals(head) == 0


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out

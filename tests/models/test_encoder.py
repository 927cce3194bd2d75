"""Runtime tests for the torch-free TextEncoder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.artifacts import current_dir, read_spec
from models.encoder import ENCODER_NAME, TextEncoder
from models.errors import ModelLoadError


@pytest.fixture(scope="module")
def encoder(encoder_artifacts: Path) -> TextEncoder:
    return TextEncoder.from_artifacts(encoder_artifacts)


def test_serving_module_does_not_import_torch() -> None:
    code = (
        "import sys, models.encoder; "
        "bad = {'torch', 'transformers', 'sentence_transformers'} & set(sys.modules); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_version_and_dim_match_spec(encoder: TextEncoder, encoder_artifacts: Path) -> None:
    spec = read_spec(encoder_artifacts, ENCODER_NAME)
    assert encoder.version == spec["version"]
    assert encoder.version.startswith("encoder-")
    assert encoder.dim == spec["dim"] == 384
    assert encoder.max_length == spec["max_seq_length"] == 256


def test_shape_dtype_and_normalised(encoder: TextEncoder) -> None:
    out = encoder.encode(["waterproof hiking boots", "a", "Café in Zürich — 東京 🙂!"])
    assert out.shape == (3, encoder.dim)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_empty_input(encoder: TextEncoder) -> None:
    out = encoder.encode([])
    assert out.shape == (0, encoder.dim)
    assert out.dtype == np.float32


def test_rejects_a_single_string(encoder: TextEncoder) -> None:
    with pytest.raises(TypeError):
        encoder.encode("hiking boots")


def test_order_preserved_across_batches(encoder_artifacts: Path, encoder: TextEncoder) -> None:
    texts = [("word " * n).strip() + f" item {i}" for i, n in enumerate([1, 60, 3, 200, 7, 0, 30])]
    texts += ["", "trail running shoes", "jazz piano album " * 40]
    small = TextEncoder.from_artifacts(encoder_artifacts, batch_size=3)
    batched = small.encode(texts)
    one_by_one = np.vstack([encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    # and the same text always lands on its own row
    np.testing.assert_allclose(encoder.encode(texts[::-1])[::-1], batched, atol=1e-5)


def test_long_text_is_truncated_not_rejected(encoder: TextEncoder) -> None:
    long = "hiking boots " * 1000
    longer = long + " jazz piano album " * 500  # differs only after token 256
    out = encoder.encode([long, longer])
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)


def test_texts_are_truncated_at_the_encoders_max_length(encoder_artifacts: Path) -> None:
    # the exported tokenizer.json truncates at 256 by itself: a shorter limit shows that the
    # encoder applies its own
    short = TextEncoder(current_dir(encoder_artifacts, ENCODER_NAME), max_length=16)
    base = "hiking boots " * 10  # 20 words, more than 16 tokens
    late, early = base + "jazz piano album", "jazz " + base
    out = short.encode([base, late, early])
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    assert not np.allclose(out[0], out[2], atol=1e-3)


def test_semantic_sanity(encoder: TextEncoder) -> None:
    boots, shoes, jazz = encoder.encode(["hiking boots", "trail running shoes", "jazz piano album"])
    assert float(boots @ shoes) > float(boots @ jazz) + 0.1


def test_missing_dir_raises_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no encoder model"):
        TextEncoder(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="export"):
        TextEncoder.from_artifacts(tmp_path)


def test_corrupt_model_raises_model_load_error(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not an onnx model")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="tokenizer"):
        TextEncoder(tmp_path)


def test_corrupt_onnx_raises_model_load_error(tmp_path: Path, encoder: TextEncoder) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not an onnx model")
    (tmp_path / "tokenizer.json").write_bytes((encoder.model_dir / "tokenizer.json").read_bytes())
    with pytest.raises(ModelLoadError, match="cannot load ONNX model"):
        TextEncoder(tmp_path)


def test_unavailable_provider_raises(encoder: TextEncoder) -> None:
    with pytest.raises(ModelLoadError, match="providers"):
        TextEncoder(encoder.model_dir, providers=["NoSuchExecutionProvider"])
    # a preference list falls back to what is available
    enc = TextEncoder(
        encoder.model_dir, providers=["NoSuchExecutionProvider", "CPUExecutionProvider"]
    )
    assert enc.providers == ["CPUExecutionProvider"]

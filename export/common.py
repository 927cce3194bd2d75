"""What every export shares: torch (the export extra), a staging folder per artifact, and
for the two-graph models their item tower's export and the record of how they were made."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from models.artifacts import ITEM_TOWER_FILE
from models.errors import ExportError


def require_torch() -> Any:
    try:
        import torch
    except ImportError as e:
        raise ExportError("the export extra is not installed: pip install -e '.[export]'") from e
    return torch


@contextmanager
def staging(root: Path, name: str) -> Iterator[Path]:
    """A fresh folder under ``root`` to write an artifact into, before
    :func:`models.artifacts.publish` moves it into place; a failed export leaves nothing
    behind."""
    root.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{name}-staging-", dir=root))
    try:
        staged.chmod(0o755)  # mkdtemp makes it 0700; it becomes the published version directory
        yield staged
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def export_item_tower(graph: Any, example: Any, staged: Path, output: str, opset: int) -> None:
    """The item tower ``graph`` (``item`` [items, dim] -> ``output``) as
    :data:`models.artifacts.ITEM_TOWER_FILE` in ``staged``, any number of items."""
    torch = require_torch()
    torch.onnx.export(
        graph,
        (example,),
        str(staged / ITEM_TOWER_FILE),
        input_names=["item"],
        output_names=[output],
        dynamic_axes={"item": {0: "items"}, output: {0: "items"}},
        opset_version=opset,
        dynamo=False,
    )


def two_tower_record(
    dim: int,
    diffs: dict[str, float],
    metrics: dict[str, Any],
    encoder_version: str,
    source: str,
    started: float,
) -> dict[str, Any]:
    """What a two-graph model's spec records beside its own fields: the item tower, the
    validation against torch, the training metrics and data, the encoder whose vectors it
    learned from, and how long the export took (since ``started``, a ``time.time()``)."""
    return {
        "item_tower": {"file": ITEM_TOWER_FILE, "item": ["items", dim]},
        "validation_max_abs_diff": diffs,
        "metrics": metrics,
        "encoder_version": encoder_version,
        "training_data": source,
        "seconds": round(time.time() - started, 1),
    }

"""What every export shares: torch (the export extra) and a staging folder per artifact."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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

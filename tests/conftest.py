"""Shared pytest fixtures.

Only the encoder export fixture lives here for now; other shared fixtures get merged in later.
"""

from __future__ import annotations

from pathlib import Path

import pytest


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

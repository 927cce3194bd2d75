"""Settings: what a worker subprocess is started with."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.settings import Settings
from streams.stack import WorkerProcess


def test_every_setting_reaches_a_worker_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker started by the local stack runs on its settings, every one of them (it used to
    get a fixed list, so e.g. ``pipeline`` overrides were silently dropped), and not on the
    parent's own STREAMREC_* variables."""
    chosen = Settings.model_validate(
        {
            "platforms": "shop,news",
            "pipeline": "rerank_every=50,covisit_candidates=80",
            "top_k": 7,
            "onnx_spinning": True,
            "batch_within_s": 0.01,
            "sasl_password": "s3cret",
            "data_dir": Path("/tmp/state"),
        }
    )
    monkeypatch.setenv("STREAMREC_TOP_K", "99")
    env = WorkerProcess(chosen, Path("worker.log")).env()
    for name, value in env.items():
        if name.startswith("STREAMREC_"):
            monkeypatch.setenv(name, value)
    worker_side = Settings()
    assert worker_side.model_dump() == {
        **chosen.model_dump(),
        "artifacts_dir": chosen.artifacts_dir.resolve(),
    }
    assert worker_side.pipeline == ("rerank_every=50", "covisit_candidates=80")
    assert worker_side.sasl_password.get_secret_value() == "s3cret"

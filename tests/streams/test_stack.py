"""LocalStack's temporary folder: removed after a clean run, kept with its logs after a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.errors import StreamrecError
from streams.settings import Settings
from streams.stack import LocalStack, WorkerProcess


class FakeBroker:
    """Records start and stop; the stack owns it only when it made it, so tests pass it in."""

    bootstrap = "127.0.0.1:1"

    def __init__(self) -> None:
        self.running = False

    def start(self) -> FakeBroker:
        self.running = True
        return self

    def stop(self) -> None:
        self.running = False


@pytest.fixture
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder's fate does not depend on what runs in it: skip topics and the worker."""
    monkeypatch.setattr("streams.stack.ensure_topics", lambda *a, **k: None)
    monkeypatch.setattr(WorkerProcess, "start", lambda self, timeout_s=90.0: self)


def test_a_clean_run_removes_its_temporary_folder(no_worker: None) -> None:
    with LocalStack(Settings(), broker=FakeBroker()) as stack:  # type: ignore[arg-type]
        folder = stack.workdir
        (folder / "worker.log").write_text("ready")
        assert folder.is_dir()
    assert not folder.exists()


def test_a_failure_or_keep_workdir_keeps_it(no_worker: None) -> None:
    stack = LocalStack(Settings(), broker=FakeBroker())  # type: ignore[arg-type]
    failed = stack.workdir
    with pytest.raises(StreamrecError), stack:
        raise StreamrecError("no recommendation; see the worker log")
    with LocalStack(Settings(), broker=FakeBroker()) as stack:  # type: ignore[arg-type]
        kept = stack.workdir
        stack.keep_workdir = True
    try:
        assert failed.is_dir() and kept.is_dir()
    finally:
        for folder in (failed, kept):
            for f in folder.rglob("*"):
                f.unlink()
            folder.rmdir()


def test_a_given_folder_is_never_removed(no_worker: None, tmp_path: Path) -> None:
    with LocalStack(Settings(), workdir=tmp_path / "stack", broker=FakeBroker()):  # type: ignore[arg-type]
        pass
    assert (tmp_path / "stack").is_dir()


def test_a_worker_that_fails_to_start_stops_the_broker_the_stack_started(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broker = FakeBroker()
    monkeypatch.setattr("streams.stack.EmbeddedBroker", lambda log_file: broker)
    monkeypatch.setattr("streams.stack.ensure_topics", lambda *a, **k: None)

    def fail(self: WorkerProcess, timeout_s: float = 90.0) -> WorkerProcess:
        raise StreamrecError(f"worker exited with code 1; see {self.log_file}")

    monkeypatch.setattr(WorkerProcess, "start", fail)
    with (
        pytest.raises(StreamrecError, match="worker exited"),
        LocalStack(Settings(), workdir=tmp_path / "stack"),
    ):
        pass
    assert not broker.running

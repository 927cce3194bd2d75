"""A local stack: embedded broker + topics + one worker subprocess. Used by the demo and tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from models.errors import StreamrecError
from streams.broker import EmbeddedBroker, ensure_topics, free_port
from streams.settings import Settings


class WorkerProcess:
    """``streamrec worker`` in a subprocess, configured through the environment."""

    def __init__(self, settings: Settings, log_file: Path) -> None:
        self.settings = settings
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
        env.update(s.as_env())
        env["STREAMREC_ARTIFACTS_DIR"] = str(Path(s.artifacts_dir).resolve())
        return env

    def start(self, timeout_s: float = 90.0) -> WorkerProcess:
        out = open(self.log_file, "ab")  # noqa: SIM115 - lives as long as the process
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--loglevel", "info"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self.env(),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise StreamrecError(
                    f"worker exited with code {self._proc.returncode}; see {self.log_file}"
                )
            if self.ready():
                return self
            time.sleep(0.3)
        raise StreamrecError(f"worker not ready within {timeout_s:.0f}s; see {self.log_file}")

    def status(self) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.settings.web_port}/status"
        with urllib.request.urlopen(url, timeout=2) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body

    def ready(self) -> bool:
        try:
            self.status()
        except OSError:
            return False
        log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return "Ready" in log or "ready" in log

    def wait_for_catalog(self, n: int, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        indexed = 0
        while time.monotonic() < deadline:
            try:
                indexed = self.status()["catalog_items"]
            except OSError:  # busy embedding a large batch: the status page answers late
                continue
            if indexed >= n:
                return
            time.sleep(0.2)
        raise StreamrecError(f"catalog not indexed within {timeout_s:.0f}s ({indexed} of {n})")

    def stop(self) -> int | None:
        if self._proc is None:
            return None
        self._proc.terminate()
        try:
            code = self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        self._proc = None
        return code


class LocalStack:
    """Broker, topics and a worker with a fresh data dir (the embedded broker forgets on exit,
    so a RocksDB dir from an earlier run would point at offsets that no longer exist).

    Without ``workdir`` it makes a temporary one and removes it on a clean exit; it is kept,
    with the worker's and broker's logs, when the block raises, when the stack fails to start,
    or when ``keep_workdir`` is set (the caller names it in its error).
    """

    def __init__(
        self, settings: Settings, workdir: Path | None = None, broker: EmbeddedBroker | None = None
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="streamrec-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.keep_workdir = False
        self._own_broker = broker is None
        self.broker = broker or EmbeddedBroker(log_file=self.workdir / "broker.log")
        self.base_settings = settings
        self.settings = settings
        self.worker: WorkerProcess | None = None

    def __enter__(self) -> LocalStack:
        if self._own_broker:
            self.broker.start()
        try:
            self._start_worker()
        except BaseException:
            self._stop()
            raise
        return self

    def _start_worker(self) -> None:
        s = self.base_settings
        self.settings = s.model_copy(
            update={
                "bootstrap_servers": self.broker.bootstrap,
                "data_dir": self.workdir / "state",
                "web_port": free_port(),
            }
        )
        ensure_topics(self.broker.bootstrap, self.settings.all_topics, self.settings.partitions)
        self.worker = WorkerProcess(self.settings, self.workdir / "worker.log")
        self.worker.start()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._stop()
        if self._own_workdir and exc_type is None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self._own_broker:
            self.broker.stop()

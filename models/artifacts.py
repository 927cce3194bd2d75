"""Versioned model artifacts on disk.

Layout::

    <root>/<name>/<version>/model.onnx   the model
    <root>/<name>/<version>/spec.json    how it was exported and validated
    <root>/<name>/CURRENT                the version the worker serves

A version is ``<name>-<first 12 hex of the model file's sha256>``, so the same weights always
get the same version and every published recommendation can name the exact files it used.
Publishing writes the version directory first and flips ``CURRENT`` last (atomic rename), which
is what a hot swap needs.

Examples
--------
>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> staged = root / "staging"; staged.mkdir()
>>> _ = (staged / "model.onnx").write_bytes(b"weights")
>>> version = publish(root, "ranker", staged, {"opset": 17})
>>> version
'ranker-9a129038d9a0'
>>> current_dir(root, "ranker").name == version
True
>>> read_spec(root, "ranker")["version"] == version
True
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import onnxruntime as ort

from models.errors import ModelLoadError

MODEL_FILE = "model.onnx"
SPEC_FILE = "spec.json"
CURRENT_FILE = "CURRENT"


def file_version(name: str, model_file: Path, *others: Path) -> str:
    """``name-<digest>`` of the model file, and of any ``others`` (other graphs of the same
    model) by name and content; with none, the digest of the model file alone."""
    digest = hashlib.sha256(model_file.read_bytes())
    for other in others:
        digest.update(other.name.encode() + b"\0" + other.read_bytes())
    return f"{name}-{digest.hexdigest()[:12]}"


def publish(root: Path, name: str, staged: Path, spec: dict[str, Any]) -> str:
    """Move a staged artifact directory into place and make it current; returns its version,
    which names every ONNX graph in it."""
    model_file = staged / MODEL_FILE
    if not model_file.is_file():
        raise ModelLoadError(f"cannot publish {name}: {model_file} does not exist")
    others = sorted(p for p in staged.glob("*.onnx") if p.name != MODEL_FILE)
    version = file_version(name, model_file, *others)
    spec = {**spec, "name": name, "version": version}
    (staged / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True))
    target = root / name / version
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staged), str(target))
    pointer = root / name / (CURRENT_FILE + ".tmp")
    pointer.write_text(version + "\n")
    os.replace(pointer, root / name / CURRENT_FILE)
    return version


def current_version(root: Path, name: str) -> str:
    pointer = root / name / CURRENT_FILE
    try:
        return pointer.read_text().strip()
    except FileNotFoundError as e:
        raise ModelLoadError(f"no {name} model under {root}: run `streamrec export` first") from e


def current_dir(root: Path, name: str, version: str | None = None) -> Path:
    version = version or current_version(root, name)
    path = root / name / version
    if not (path / MODEL_FILE).is_file():
        raise ModelLoadError(f"{name} version {version} is incomplete: {path / MODEL_FILE} missing")
    return path


def read_spec(root: Path, name: str, version: str | None = None) -> dict[str, Any]:
    path = current_dir(root, name, version) / SPEC_FILE
    try:
        spec: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot read {path}: {e}") from e
    return spec


def session_options(threads: int = 0, spinning: bool = True) -> ort.SessionOptions:
    """ONNX Runtime options with ``threads`` intra-op threads (0: one per core).

    ``spinning``: those threads busy-wait for the next call instead of sleeping (ONNX Runtime's
    default). A replay calling back to back gains from it (Amazon, first 60,000 events: 965
    events/s vs 854 without); the stream worker does not: between batches it only burns CPU
    the event loop and the broker need (``python -m loadtest.burst --events 3000``, two runs
    each, alternating: 372 / 406 events/s with it, 436 / 478 without; the worker's CPU time
    over the burst 10.4 / 9.5 s vs 6.4 / 5.7 s; at the demo's light load no cost in latency:
    p50 25.6 / 25.4 ms vs 27.0 / 26.5 with it), so the worker turns it off
    (``Settings.onnx_spinning``).

    >>> session_options(1, spinning=False).get_session_config_entry(
    ...     "session.intra_op.allow_spinning")
    '0'
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def load_sessions(
    model_dir: Path,
    files: Sequence[str],
    providers: Sequence[str] | None,
    threads: int,
    spinning: bool = True,
) -> list[ort.InferenceSession]:
    """ONNX Runtime sessions for the graphs ``files`` of one artifact, with ``threads``
    intra-op threads (0: one per core), busy-waiting between calls if ``spinning`` (see
    :func:`session_options`)."""
    options = session_options(threads, spinning)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # denormal activations would slow the CPU kernels many times over; they change nothing
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    sessions = []
    for file in files:
        try:
            sessions.append(
                ort.InferenceSession(
                    str(model_dir / file),
                    sess_options=options,
                    providers=list(providers or ["CPUExecutionProvider"]),
                )
            )
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"cannot load {model_dir / file}: {e}") from e
    return sessions


#: A two-graph model's item tower, beside its main :data:`MODEL_FILE`.
ITEM_TOWER_FILE = "item_tower.onnx"


class TwoTowerModel:
    """What the models served as two ONNX graphs share (:class:`models.ranker.RankingHead`,
    :class:`models.sequence.SequenceModel`): the main graph, whose input names must be
    :attr:`inputs`, and an item tower (``item`` -> :attr:`tower_output`) that depends on the
    item alone, so it runs once per catalog row; the spec beside them, and the encoder whose
    vectors they were trained on (another one's are meaningless to them).

    ``threads``: ONNX Runtime's intra-op threads (0: one per core; a replay beside others
    takes 1). ``spinning``: see :func:`session_options`.
    """

    kind: ClassVar[str]  # the artifact's name under the root
    label: ClassVar[str]  # what errors call it
    inputs: ClassVar[tuple[str, ...]]
    tower_output: ClassVar[str]

    def __init__(
        self,
        model_dir: Path,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        spinning: bool = True,
    ) -> None:
        spec = read_spec(model_dir.parent.parent, model_dir.parent.name, model_dir.name)
        self.spec = spec
        self.version: str = spec["version"]
        self.encoder_version: str | None = spec.get("encoder_version")
        self._check_spec()
        if not (model_dir / ITEM_TOWER_FILE).is_file():
            raise self._stale(
                f"has no {ITEM_TOWER_FILE} (exported before the item tower was split off)"
            )
        self._session, self._item_tower = load_sessions(
            model_dir, (MODEL_FILE, ITEM_TOWER_FILE), providers, threads, spinning
        )
        #: the main graph's input shapes by name
        self.input_shapes: dict[str, list[Any]] = {
            i.name: i.shape for i in self._session.get_inputs()
        }
        if set(self.input_shapes) != set(self.inputs):
            raise self._stale(
                f"takes inputs {sorted(self.input_shapes)}, this code passes {sorted(self.inputs)}"
            )
        self._loaded()

    def _check_spec(self) -> None:
        """Refuse a spec this code cannot serve (a subclass's checks)."""

    def _loaded(self) -> None:
        """Both graphs are loaded: a subclass reads what it needs from them and the spec."""

    def _stale(self, what: str) -> ModelLoadError:
        return ModelLoadError(f"{self.label} {self.version} {what}: re-export the {self.label}")

    @classmethod
    def from_artifacts(
        cls,
        root: Path,
        version: str | None = None,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        spinning: bool = True,
    ) -> Self:
        """The published version under ``root`` (``CURRENT``, or ``version``)."""
        return cls(current_dir(root, cls.kind, version), providers, threads, spinning)

    def check_encoder(self, encoder_version: str) -> Self:
        """Itself if it was trained on ``encoder_version``'s vectors, else a clear error."""
        if self.encoder_version != encoder_version:
            raise self._stale(
                f"was trained on {self.encoder_version}'s vectors, the catalog is encoded by "
                f"{encoder_version}"
            )
        return self

    def _tower(self, items: np.ndarray, width: int) -> np.ndarray:
        """The item tower's output for item text vectors ``items`` [n, dim]: [n, width]."""
        if len(items) == 0:
            return np.zeros((0, width), dtype=np.float32)
        out: np.ndarray = self._item_tower.run(
            [self.tower_output], {"item": np.ascontiguousarray(items, dtype=np.float32)}
        )[0]
        return out

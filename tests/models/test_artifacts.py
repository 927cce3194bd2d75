"""Published artifact versions."""

from __future__ import annotations

from pathlib import Path

from models.artifacts import current_version, publish, read_spec


def stage(root: Path, files: dict[str, bytes]) -> Path:
    staged = root / "staging"
    staged.mkdir(parents=True)
    for name, content in files.items():
        (staged / name).write_bytes(content)
    return staged


def test_the_version_names_every_graph_of_the_model(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    one = publish(root, "m", stage(tmp_path / "a", {"model.onnx": b"scorer"}), {})
    two = publish(
        root, "m", stage(tmp_path / "b", {"model.onnx": b"scorer", "tower.onnx": b"t1"}), {}
    )
    three = publish(
        root, "m", stage(tmp_path / "c", {"model.onnx": b"scorer", "tower.onnx": b"t2"}), {}
    )
    assert len({one, two, three}) == 3
    assert current_version(root, "m") == three
    assert read_spec(root, "m", two)["version"] == two
    # the same files give the same version (an export is reproducible by its version)
    again = publish(
        root, "m", stage(tmp_path / "d", {"model.onnx": b"scorer", "tower.onnx": b"t1"}), {}
    )
    assert again == two

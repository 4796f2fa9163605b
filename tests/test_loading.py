"""model/loading.py: bad checkpoints and hostile pickles give one clear line, never a traceback."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path


def copy_tiny(tiny_dir: Path, target: Path) -> Path:
    shutil.copytree(tiny_dir, target)
    return target


def test_truncated_safetensors(cli, tiny_dir: Path, tmp_path: Path) -> None:
    folder = copy_tiny(tiny_dir, tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])
    result = cli("trace", "hi", "--model", str(folder), "-q", "none")
    assert result.code == 1
    # Our sentence, then safetensors' own reason, whose wording changes between its
    # versions: check that one is given, on the same single line, not what it says.
    prefix = f"Error: model.safetensors in {folder} is truncated or corrupt: "
    assert result.err.startswith(prefix)
    assert result.err.count("\n") == 1 and result.err.removeprefix(prefix).strip()


def test_corrupt_safetensors(cli, tiny_dir: Path, tmp_path: Path) -> None:
    folder = copy_tiny(tiny_dir, tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"definitely not safetensors")
    result = cli("trace", "hi", "--model", str(folder), "-q", "none")
    assert result.code == 1
    assert result.err.startswith(f"Error: model.safetensors in {folder} is truncated or corrupt")
    assert result.err.count("\n") == 1


def test_weights_that_do_not_match_the_config(cli, tiny_dir: Path, tmp_path: Path) -> None:
    folder = copy_tiny(tiny_dir, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["ffn_dim"] = 128
    (folder / "config.json").write_text(json.dumps(config))
    result = cli("trace", "hi", "--model", str(folder), "-q", "none")
    assert result.code == 1
    assert result.err == (
        f"Error: the weights of {folder} do not match its config: "
        "model.decoder.layers.0.fc1.bias has shape [256] in model.safetensors, "
        "the config expects [128]\n"
    )


class Payload:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_pickle_payload_is_never_executed(cli, tiny_dir: Path, tmp_path: Path) -> None:
    folder = copy_tiny(tiny_dir, tmp_path / "hostile")
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "marker.txt"
    with (folder / "pytorch_model.bin").open("wb") as f:
        pickle.dump({"model.decoder.embed_tokens.weight": Payload(marker)}, f)
    result = cli("trace", "hi", "--model", str(folder), "-q", "none")
    assert not marker.exists()
    assert result.code == 1
    assert result.err == (
        f"Error: cannot load the weights of {folder}: its pickle checkpoint holds more than "
        "tensors, so it was refused unread\n"
    )

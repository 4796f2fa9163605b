"""Bad checkpoints, hostile pickles, offloading and fuzzed text: clear errors, never a traceback."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optinspect.errors import OptinspectError
from optinspect.tracing import iter_trace


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


def test_disk_offload_records_every_module_with_the_same_statistics(cli, tmp_path: Path) -> None:
    base = ["trace", "The quick brown fox", "--model", "tiny", "-q", "none", "-f", "json"]
    plain = json.loads(cli(*base, "--layer", "all").out)
    result = cli(
        *base, "--layer", "all", "--device-map", "sequential", "--max-memory", "cpu=600KB",
        "--offload-dir", str(tmp_path / "offload"),
    )  # fmt: skip
    assert result.code == 0, result.err
    offloaded = json.loads(result.out)
    assert offloaded["device"] == "map:sequential"
    assert [m["name"] for m in offloaded["modules"]] == [m["name"] for m in plain["modules"]]
    homes = {m["weight_device"] for m in offloaded["modules"] if m["weight_dtype"]}
    assert homes == {"cpu", "disk"}
    fc1 = next(m for m in offloaded["modules"] if m["name"] == "model.decoder.layers.3.fc1")
    assert fc1["weight_device"] == "disk" and fc1["device"] == "cpu"
    for a, b in zip(plain["modules"], offloaded["modules"], strict=True):
        assert a["shape"] == b["shape"]
        for key, value in a["stats"].items():
            assert b["stats"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), (a["name"], key)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--max-memory", "cuda:0=lots"],
            "cannot read --max-memory 'cuda:0=lots': use DEVICE=SIZE pairs like "
            "'cuda:0=10GiB,cpu=30GiB'",
        ),
        (
            ["--max-memory", "tpu=1GiB"],
            "cannot read --max-memory 'tpu=1GiB': use DEVICE=SIZE pairs like "
            "'cuda:0=10GiB,cpu=30GiB'",
        ),
        (
            ["--device-map", "diagonal"],
            "unknown device map 'diagonal': use auto, balanced, sequential",
        ),
    ],
)
def test_placement_errors(cli, args: list[str], message: str) -> None:
    result = cli("trace", "hi", "--model", "tiny", "-q", "none", *args)
    assert (result.code, result.err) == (2, f"Error: {message}\n")


def test_truncate_keeps_the_first_positions(cli) -> None:
    result = cli("trace", " the" * 150, "--model", "tiny", "-q", "none", "-f", "json", "--truncate")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert len(doc["tokens"]) == 128
    assert doc["modules"][-1]["shape"] == [1, 128, 512]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=60))
def test_any_text_traces_or_fails_cleanly(load_tiny, text: str) -> None:
    model = load_tiny("none")
    try:
        (result,) = iter_trace(model, [text], layers="0")
    except OptinspectError as e:
        assert e.exit_code == 2
        assert "\n" not in str(e)
        return
    assert result.tokens[0].id == 2
    assert len(result.modules) == 11


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(min_size=1, max_size=40).filter(lambda t: t != "-"))  # "-" means stdin
def test_any_text_through_the_cli_never_shows_a_traceback(cli, text: str) -> None:
    result = cli("trace", text, "--model", "tiny", "-q", "none", "-f", "json", "--layer", "-1")
    assert "Traceback" not in result.err
    if result.code == 0:
        assert json.loads(result.out)["text"] == text
    else:
        assert result.code == 2 and result.err.startswith("Error: ")
        # One line, plus a pointer to --help when the parser refused it (e.g. "-x"); that
        # pointer is click's text, so only its mention of --help is checked.
        lines = result.err.splitlines()
        assert len(lines) == 1 or (len(lines) == 2 and "--help" in lines[1])


def test_out_of_memory_gives_hints(cli, monkeypatch) -> None:
    import torch

    import optinspect.commands.common as common

    def exhausted(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(common, "load_with_status", exhausted)
    result = cli("trace", "hi", "--model", "tiny")
    assert result.code == 1
    assert result.err == (
        "Error: out of memory; try --quant 4bit, a smaller --model, or a CPU run with "
        "--device cpu\nRun again with --debug for the traceback.\n"
    )


def test_interrupt_during_a_saved_run_leaves_no_file_and_no_hooks(
    cli, monkeypatch, load_tiny, tmp_path: Path
) -> None:
    import optinspect.commands.common as common

    loaded = load_tiny("none")
    monkeypatch.setattr(common, "load_with_status", lambda *a, **k: loaded)
    model = loaded.model
    before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    calls = []

    def interrupt_second_batch(module, args) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    handle = model.model.decoder.register_forward_pre_hook(interrupt_second_batch)
    texts = tmp_path / "s.txt"
    texts.write_text("one\ntwo\nthree\n", encoding="utf-8")
    target = tmp_path / "out.safetensors"
    try:
        result = cli(
            "trace", "--file", str(texts), "--model", "tiny", "--layer", "0", "-b", "1",
            "--save", str(target), "-f", "jsonl",
        )  # fmt: skip
    finally:
        handle.remove()
    assert (result.code, result.err) == (130, "Error: interrupted\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.txt"]
    after = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    assert after == before
    assert len(result.out.splitlines()) == 1  # the first sentence was already streamed


def test_a_failing_write_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    import safetensors.torch
    import torch

    from optinspect.engine.saving import ActivationStore

    store = ActivationStore()
    store.add(0, "m", 0, torch.ones(3))

    def broken(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        store.write(tmp_path / "a.safetensors", model="tiny", quant="none")
    assert list(tmp_path.iterdir()) == []

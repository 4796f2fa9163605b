"""engine/saving.py: atomic writes and ``trace --save``; an interrupted or failed write leaves
no partial file and no temporary behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from optinspect.engine.saving import write_atomic

# One bound for how far a padded batch moves a module's output; test_runner.py explains it.
from test_runner import OUTPUT_DRIFT

SENTENCES = ["Hello world", "The quick brown fox jumps over the lazy dog", "The capital of France"]


def test_write_atomic_replaces_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        # The data goes to a temporary beside the target, never to the target itself.
        assert tmp.parent == tmp_path and tmp != target
        assert target.read_text() == "old"
        tmp.write_text("new")

    assert write_atomic(target, write) == target
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    assert len(seen) == 1 and not seen[0].exists()


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_write_atomic_failure_leaves_no_partial_target_or_temporary(
    tmp_path: Path, error: BaseException
) -> None:
    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise error

    with pytest.raises(type(error)):
        write_atomic(tmp_path / "new.bin", half_then_fail)
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_failure_leaves_an_existing_target_untouched(tmp_path: Path) -> None:
    target = tmp_path / "keep.bin"
    target.write_bytes(b"keep me")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, half_then_fail)
    assert target.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.bin"]


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


def test_save_round_trip_matches_a_direct_forward(cli, tmp_path: Path, load_tiny) -> None:
    target = tmp_path / "layer3.safetensors"
    texts = tmp_path / "s.txt"
    texts.write_text("\n".join(SENTENCES[:2]), encoding="utf-8")
    result = cli(
        "trace", "--file", str(texts), "--model", "tiny", "-q", "none", "--layer", "3",
        "--save", str(target), "-f", "jsonl",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    model = load_tiny("none")
    with safe_open(str(target), framework="pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
        assert len(keys) == 2 * 11
        for index, text in enumerate(SENTENCES[:2]):
            ids = model.tokenizer(text, return_tensors="pt")["input_ids"]
            assert json.loads(meta[f"{index}/tokens"]) == ids[0].tolist()
            assert meta[f"{index}/text"] == text
            outputs: dict[str, torch.Tensor] = {}
            fc1 = model.model.get_submodule("model.decoder.layers.3.fc1")
            handle = fc1.register_forward_hook(
                lambda m, a, o, seen=outputs: seen.setdefault("fc1", o)
            )
            try:
                with torch.inference_mode():
                    logits = model.model(ids).logits
            finally:
                handle.remove()
            saved = f.get_tensor(f"{index}/model.decoder.layers.3.fc1")
            assert saved.shape == outputs["fc1"].shape
            # Saved from a padded batch of two, compared with this sentence run alone:
            # they differ by float rounding only (OUTPUT_DRIFT says how much and why).
            drift = float((saved - outputs["fc1"]).abs().max())
            assert drift <= OUTPUT_DRIFT["none"] * float(outputs["fc1"].abs().max())
            layer = f.get_tensor(f"{index}/model.decoder.layers.3")
            assert layer.shape == (1, ids.shape[1], 64)
            assert logits.shape[1] == ids.shape[1]


def test_save_refuses_to_overwrite_without_force(cli, tmp_path: Path) -> None:
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"keep me")
    result = cli("trace", "Hi", "--model", "tiny", "--layer", "0", "--save", str(target))
    assert (result.code, result.err) == (
        2,
        f"Error: {target} exists: use --force to overwrite it\n",
    )
    assert target.read_bytes() == b"keep me"
    forced = cli(
        "trace", "Hi", "--model", "tiny", "-q", "none", "--layer", "0", "--save", str(target),
        "--force", "-f", "json",
    )  # fmt: skip
    assert forced.code == 0, forced.err
    with safe_open(str(target), framework="pt") as f:
        assert "0/model.decoder.layers.0.fc1" in set(f.keys())


def test_write_atomic_keeps_the_mode_of_the_file_it_replaces(tmp_path: Path) -> None:
    import os
    import stat

    from optinspect.engine.saving import write_atomic

    target = tmp_path / "private.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)  # a file the user made private stays private after --force
    write_atomic(target, lambda tmp: tmp.write_bytes(b"new"))
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600

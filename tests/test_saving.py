"""engine/saving.py: atomic writes and ``trace --save``; an interrupted or failed write leaves
no partial file and no temporary behind; a saved file or plot follows the umask."""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import TINY
from optinspect.results.files import write_atomic

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
    import torch

    import optinspect.engine.saving as saving

    real_open = Path.open

    class Full:  # the disk fills after a few bytes of the file
        def __init__(self, handle) -> None:
            self.handle = handle

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def write(self, data: bytes) -> int:
            self.handle.write(bytes(data[:4]))
            raise OSError("disk full")

    def open_full(self: Path, mode: str = "r", *args, **kwargs):
        handle = real_open(self, mode, *args, **kwargs)
        return Full(handle) if "w" in mode else handle

    monkeypatch.setattr(saving.Path, "open", open_full)
    with (
        saving.ActivationStore(tmp_path / "a.safetensors") as store,
        pytest.raises(OSError, match="disk full"),
    ):
        store.add(0, "m", 0, torch.ones(3))
        store.write(model="tiny", quant="none")
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

    from optinspect.results.files import write_atomic

    target = tmp_path / "private.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)  # a file the user made private stays private after --force
    write_atomic(target, lambda tmp: tmp.write_bytes(b"new"))
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


# --- the streaming safetensors writer ----------------------------------------------------


def _held(root: object, depth: int = 4) -> list[object]:
    """Tensors, arrays and large bytes reachable from ``root`` (its attributes, their
    containers), ``depth`` references deep."""
    import gc

    import numpy as np

    found: list[object] = []
    seen: set[int] = set()
    layer = [root]
    for _ in range(depth):
        following = []
        for item in layer:
            for ref in gc.get_referents(item):
                if id(ref) in seen or isinstance(ref, type) or callable(ref):
                    continue
                seen.add(id(ref))
                if isinstance(ref, torch.Tensor | np.ndarray) or (
                    isinstance(ref, bytes | bytearray | memoryview) and len(ref) > 4096
                ):
                    found.append(ref)
                else:
                    following.append(ref)
        layer = following
    return found


def test_the_writer_keeps_no_tensor_it_was_given(tmp_path: Path) -> None:
    # A --save file of opt-125m over 80 sentences is 503 MB: held in memory until the end,
    # the run's peak grew with it (1.16 GB for 3 sentences, 1.52 GB for 80). Each tensor
    # must go to disk as it comes, leaving nothing of it behind.
    import tracemalloc

    from optinspect.engine.saving import SafetensorsWriter

    megabyte = (256, 1024)  # float32
    tracemalloc.start()
    try:
        with SafetensorsWriter(tmp_path / "big.safetensors") as writer:
            for i in range(32):
                writer.add(f"0/layer{i}", torch.full(megabyte, float(i)))
                assert _held(writer) == [], i
            writer.finish({"format": "pt"})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 32 MiB went through; what Python allocated on the way (the copy's one 1 MiB buffer,
    # the header) is a small part of it, where data kept as bytes would be all of it.
    assert peak < 4 << 20, peak
    with safe_open(str(tmp_path / "big.safetensors"), framework="pt") as f:
        assert f.get_tensor("0/layer31").shape == megabyte
        assert float(f.get_tensor("0/layer31")[0, 0]) == 31.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.safetensors"]


def test_the_store_of_trace_save_keeps_no_tensor(tmp_path: Path) -> None:
    from optinspect.engine.saving import ActivationStore

    with ActivationStore(tmp_path / "a.safetensors") as store:
        for call in range(3):
            store.add(0, "model.decoder.layers.0.fc1", call, torch.ones(4, 256))
        assert _held(store) == []
        store.write(model="tiny", quant="none")


#: One tensor of every dtype a module can output or calibrate writes, mixed element sizes,
#: an empty one and a 0-d one.
MIXED = {
    "a/f16": torch.arange(6, dtype=torch.float16).reshape(2, 3),
    "b/f64": torch.tensor([1.5, -2.25, math.nan], dtype=torch.float64),
    "c/bool": torch.tensor([True, False, True]),
    "d/i64": torch.tensor([3, -4], dtype=torch.int64),
    "e/empty": torch.empty(1, 0, 64, dtype=torch.float32),
    "f/bf16": torch.tensor([0.5, 3.0], dtype=torch.bfloat16),
    "g/u8": torch.tensor([7, 255], dtype=torch.uint8),
    "h/scalar": torch.tensor(2.5, dtype=torch.float32),
    "i/f32": torch.linspace(-1, 1, 5),
}


def test_the_file_reads_as_safetensors_writes_it(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from optinspect.engine.saving import save_safetensors

    metadata = {"format": "pt", "model": "tiny", "0/text": "naïve \u2014 x"}
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    save_safetensors(ours, MIXED, metadata)
    save_file(MIXED, str(theirs), metadata=metadata)
    with safe_open(str(ours), framework="pt") as a, safe_open(str(theirs), framework="pt") as b:
        assert a.metadata() == b.metadata() == metadata
        assert set(a.keys()) == set(b.keys()) == set(MIXED)
        for key in MIXED:
            mine, reference = a.get_tensor(key), b.get_tensor(key)
            assert mine.dtype == reference.dtype and mine.shape == reference.shape, key
            assert torch.equal(mine.nan_to_num(), reference.nan_to_num()), key
    assert ours.stat().st_size == theirs.stat().st_size  # the same layout, in other order
    # Each tensor starts at a multiple of its element size, as safetensors lays them out.
    raw = ours.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    assert (8 + length) % 8 == 0
    header = json.loads(raw[8 : 8 + length])
    for key, tensor in MIXED.items():
        start, end = header[key]["data_offsets"]
        assert start % tensor.element_size() == 0, key
        assert end - start == tensor.numel() * tensor.element_size(), key


def test_the_same_tensors_give_the_same_bytes(tmp_path: Path) -> None:
    from optinspect.engine.saving import save_safetensors

    metadata = {f"{i}/text": f"sentence {i}" for i in range(20)}
    first, second = tmp_path / "1.safetensors", tmp_path / "2.safetensors"
    save_safetensors(first, MIXED, metadata)
    save_safetensors(second, dict(MIXED), dict(metadata))
    assert first.read_bytes() == second.read_bytes()


# --- trace --save at the CLI ------------------------------------------------------------


def _data_bytes(path: Path) -> int:
    """What a safetensors file's tensors take: its size less the header."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return len(raw) - 8 - length


def test_save_says_where_it_wrote_and_gives_the_same_bytes_each_run(cli, tmp_path: Path) -> None:
    texts = tmp_path / "s.txt"
    texts.write_text("\n".join(SENTENCES), encoding="utf-8")
    saved = []
    for run in ("a", "b"):
        target = tmp_path / f"{run}.safetensors"
        result = cli("trace", "--file", str(texts), "--model", "tiny", "-q", "none",
                     "--layer", "all", "--save", str(target), "-f", "jsonl")  # fmt: skip
        assert result.code == 0, result.err
        assert result.err == f"wrote {target}\n"  # as --plot says it
        saved.append(target.read_bytes())
    # The metadata (format, model, quant, each sentence's text and tokens) came in an order
    # that changed from run to run; the same input now gives the same file.
    assert saved[0] == saved[1]


def test_save_announces_a_large_file_before_the_run(cli, tmp_path: Path, monkeypatch) -> None:
    import optinspect.analyses.trace as trace_analysis
    from optinspect.render.common import format_bytes

    monkeypatch.setattr(trace_analysis, "SAVE_NOTE_BYTES", 1)  # every file counts as large
    texts = tmp_path / "s.txt"
    texts.write_text("\n".join(SENTENCES), encoding="utf-8")
    target = tmp_path / "all.safetensors"
    result = cli("trace", "--file", str(texts), "--model", "tiny", "-q", "none",
                 "--layer", "all", "--save", str(target), "-f", "jsonl")  # fmt: skip
    assert result.code == 0, result.err
    tokens = sum(len(json.loads(line)["tokens"]) for line in result.out.splitlines())
    # The estimate is the tokens times what one token's outputs take: every output a
    # trace saves grows with the tokens alone, so it is what the file holds, exactly.
    assert result.err == (
        f"note: --save will write about {format_bytes(_data_bytes(target))} to {target} "
        f"(3 sentences, {tokens} tokens), and needs as much again on disk while it is "
        f"written\nwrote {target}\n"
    )


def test_save_refuses_a_name_that_is_not_safetensors(cli, tmp_path: Path) -> None:
    result = cli("trace", "Hi", "--model", "tiny", "--save", str(tmp_path / "out.txt"))
    assert (result.code, result.err) == (
        2,
        "Error: --save writes SAFETENSORS: give a file name ending in .safetensors\n",
    )
    assert list(tmp_path.iterdir()) == []


# --- output files ------------------------------------------------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_save_file_follows_the_umask(cli, umask_022, tmp_path: Path) -> None:
    # Written to a temporary file and renamed: mkstemp makes 0600 files, which must not leak.
    target = tmp_path / "acts.safetensors"
    result = cli("trace", "Hello", *TINY, "--layer", "0", "--save", str(target))
    assert result.code == 0, result.err
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_plot_follows_the_umask_and_says_where_it_wrote(cli, umask_022, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "layers.png"
    result = cli("trace", "Hello", *TINY, "--layer", "all", "--plot", str(target))
    assert result.code == 0, result.err
    assert result.err == f"wrote {target}\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644

"""``optinspect calibrate``: act_scales against a plain-hook reference, SmoothQuant's checks,
padding, packing, the seeded choice, torchrun, and every error case."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from optinspect.analyses.calibrate import (
    CalibrationSettings,
    calibrate,
    linear_names,
    percentile_from_histogram,
)
from optinspect.engine.batch import Batch
from optinspect.engine.samples import choose, pack_blocks, tokenize_samples

SRC = Path(__file__).resolve().parent.parent / "src"
TEXTS = [
    "The quick brown fox jumps over the lazy dog",
    "Hello",
    "A longer sentence, with some punctuation; it pads the others in its batch.",
    "Calibration sets are usually a few hundred samples of the Pile.",
    "Short one.",
]


def _ids(loaded, texts=TEXTS, seq_len=None):
    return list(tokenize_samples(loaded.tokenizer, texts, seq_len=seq_len, max_positions=128))


def _reference_scales(loaded, ids: list[list[int]], batch_size: int) -> dict[str, torch.Tensor]:
    """max |x| per input channel with plain forward pre-hooks over the same padded batches."""
    model = loaded.model
    scales: dict[str, torch.Tensor] = {}
    mask: list[torch.Tensor] = []

    def hook_for(name: str):
        def hook(module: nn.Module, args) -> None:
            x = args[0].detach()
            rows = x.reshape(-1, x.shape[-1])[mask[0].reshape(-1)]
            peak = rows.abs().amax(dim=0).float()
            scales[name] = torch.maximum(scales[name], peak) if name in scales else peak

        return hook

    handles = [
        m.register_forward_pre_hook(hook_for(n))
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear)
    ]
    try:
        for start in range(0, len(ids), batch_size):
            from optinspect.results.records import Token

            chunk = ids[start : start + batch_size]
            batch = Batch.of([""] * len(chunk), [[Token(i, "") for i in s] for s in chunk], 1)
            mask[:] = [batch.attention_mask.bool()]
            with torch.inference_mode():
                model(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask if batch.padded else None,
                    use_cache=False,
                )
    finally:
        for h in handles:
            h.remove()
    return scales


@pytest.mark.parametrize("batch_size", [1, 2])
def test_act_scales_equal_plain_hooks(load_tiny, batch_size: int) -> None:
    loaded = load_tiny("none")
    ids = _ids(loaded)
    result = calibrate(loaded, ids, settings=CalibrationSettings(batch_size=batch_size))
    scales = result.act_scales()
    reference = _reference_scales(loaded, ids, batch_size)
    assert list(scales) == linear_names(loaded.model)
    assert set(scales) == set(reference)
    for name, value in scales.items():
        assert value.dtype == torch.float32 and value.device.type == "cpu" and value.dim() == 1
        assert torch.equal(value, reference[name]), name


def test_padding_does_not_count(load_tiny) -> None:
    loaded = load_tiny("none")
    ids = _ids(loaded)
    alone = calibrate(loaded, ids, settings=CalibrationSettings(batch_size=1))
    padded = calibrate(loaded, ids, settings=CalibrationSettings(batch_size=5))
    assert padded.tokens == alone.tokens == sum(len(i) for i in ids)
    for m in padded.inputs:
        assert m.tokens == alone.tokens
        hist = padded.channels[f"{m.name}/histogram"]
        assert int(hist.sum()) == alone.tokens * m.in_features
    for name in ("model.decoder.layers.0.fc1", "lm_head"):
        torch.testing.assert_close(
            padded.channels[f"{name}/sum_squares"],
            alone.channels[f"{name}/sum_squares"],
            rtol=1e-4,
            atol=1e-4,
        )
    outputs = {o.name: o.stats for o in alone.outputs}
    for o in padded.outputs:
        assert o.stats.absmax == pytest.approx(outputs[o.name].absmax, rel=1e-4)
        assert o.stats.mean == pytest.approx(outputs[o.name].mean, rel=1e-3, abs=1e-5)


def test_smooth_lm_checks_pass(load_tiny, tmp_path: Path) -> None:
    """What SmoothQuant's smooth_lm asserts for OPT, on the file as torch.load reads it."""
    from transformers.models.opt.modeling_opt import OPTDecoderLayer

    loaded = load_tiny("none")
    path = tmp_path / "act_scales.pt"
    torch.save(calibrate(loaded, _ids(loaded)).act_scales(), path)
    scales = torch.load(path, weights_only=True)
    assert isinstance(scales, dict)
    layers = 0
    for name, module in loaded.model.named_modules():
        if isinstance(module, OPTDecoderLayer):
            layers += 1
            for ln, fc, key in (
                (module.self_attn_layer_norm, module.self_attn.q_proj, f"{name}.self_attn.q_proj"),
                (module.final_layer_norm, module.fc1, f"{name}.fc1"),
            ):
                assert isinstance(ln, nn.LayerNorm) and isinstance(fc, nn.Linear)
                assert ln.weight.numel() == fc.in_features == scales[key].numel()
                # smooth_ln_fcs' arithmetic gives finite scales
                weight_max = fc.weight.abs().max(dim=0)[0].clamp(min=1e-5)
                s = scales[key].pow(0.5) / weight_max.pow(0.5)
                assert torch.isfinite(s.clamp(min=1e-5)).all()
    assert layers == loaded.num_layers


def test_pack_blocks_have_exactly_l_tokens(load_tiny) -> None:
    loaded = load_tiny("none")
    tokens = _ids(loaded)
    total = sum(len(t) for t in tokens)
    blocks = pack_blocks(iter(tokens), 7, None, allow_fewer=False)
    assert len(blocks) == total // 7 and all(len(b) == 7 for b in blocks)
    assert [i for b in blocks for i in b] == [i for t in tokens for i in t][: 7 * len(blocks)]
    assert len(pack_blocks(iter(tokens), 7, 3, allow_fewer=False)) == 3


def test_seeded_choice_is_reproducible_and_datasets_like() -> None:
    import numpy as np

    samples = [f"s{i}" for i in range(100)]
    first = choose(samples, 10, seed=42, allow_fewer=False)
    assert first == choose(samples, 10, seed=42, allow_fewer=False)
    assert first != choose(samples, 10, seed=7, allow_fewer=False)
    order = np.random.default_rng(42).permutation(100)[:10]
    assert first == [samples[i] for i in order]


def test_percentile_within_bound() -> None:
    from optinspect.analyses.calibrate import HIST_BINS, _reduce_rows

    x = torch.randn(4000, 8)
    _lo, _hi, _sums, hist = _reduce_rows(x)
    assert hist.numel() == HIST_BINS and int(hist.sum()) == x.numel()
    values = x.abs().flatten().sort().values
    for q in (0.5, 0.99, 0.999):
        true = float(values[int(torch.tensor(q * x.numel()).ceil()) - 1])
        read = percentile_from_histogram(hist, q, x.numel(), float(values[-1]))
        assert read is not None and abs(read - true) <= true / 32 + 1e-12


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_cli_files_json_and_metadata(cli, tmp_path: Path) -> None:
    corpus = _write(tmp_path / "c.jsonl", [json.dumps({"text": t}) for t in TEXTS])
    scales, shifts, out = tmp_path / "s.pt", tmp_path / "h.pt", tmp_path / "o.safetensors"
    args = ["calibrate", "--file", str(corpus), "--field", "text", "--model", "tiny"]
    files = ["--act-scales", str(scales), "--act-shifts", str(shifts), "--out", str(out)]
    r = cli(*args, *files, "--format", "json", "--samples", "4")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc["schema"] == 1 and doc["quant"] == "none" and doc["quantized"] is False
    assert doc["samples"] == 4 and doc["settings"]["seed"] == 42
    assert {"name", "in_features", "absmax", "argmax", "outlier_ratio", "percentiles"} <= set(
        doc["modules"][0]
    )
    assert (
        torch.load(scales, weights_only=True).keys() == torch.load(shifts, weights_only=True).keys()
    )
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        assert meta["model"] == "tiny" and meta["samples"] == "4" and meta["seed"] == "42"
        assert {"lm_head/absmax", "lm_head/histogram"} <= set(f.keys())
    again = cli(*args, *files)
    assert again.code == 2 and again.err == f"Error: {scales} exists: use --force to overwrite it\n"


def test_cli_files_are_named_and_the_same_bytes_each_run(cli, tmp_path: Path) -> None:
    from safetensors import safe_open

    corpus = _write(tmp_path / "c.txt", TEXTS)
    runs = []
    for run in ("a", "b"):
        paths = [tmp_path / f"{run}-{name}" for name in ("s.pt", "h.pt", "o.safetensors")]
        files = ["--act-scales", str(paths[0]), "--act-shifts", str(paths[1])]
        r = cli("calibrate", "--file", str(corpus), "--model", "tiny", *files,
                "--out", str(paths[2]), "-f", "json")  # fmt: skip
        assert r.code == 0, r.err
        # Each file in the words --plot and trace --save use: "wrote PATH".
        assert r.err == "".join(f"wrote {path}\n" for path in paths)
        runs.append([path.read_bytes() for path in paths])
    # torch.save named its archive after the random temporary file, and safetensors wrote
    # the metadata in an order that changed from run to run.
    assert runs[0] == runs[1]
    with safe_open(str(tmp_path / "a-o.safetensors"), "pt") as f:
        meta = f.metadata()
    # Booleans are spelled one way in the file's metadata: as JSON spells them.
    assert (meta["random_weights"], meta["quantized"]) == ("true", "false")
    assert not {"True", "False"} & set(meta.values())


def test_cli_quantized_says_so(cli, tmp_path: Path) -> None:
    corpus = _write(tmp_path / "c.txt", TEXTS)
    r = cli("calibrate", "--file", str(corpus), "--model", "tiny", "--quant", "4bit", "-f", "json")
    if r.code != 0:
        pytest.skip(f"4bit unavailable here: {r.err.strip()}")
    assert json.loads(r.out)["quantized"] is True


@pytest.mark.parametrize(
    ("lines", "extra", "message"),
    [
        (
            ['{"text": "a b"}', '{"body": "c"}'],
            ["--field", "text"],
            "line 2 of {f} has no field 'text'",
        ),
        (
            TEXTS,
            ["--samples", "9"],
            "the input holds 5 samples, fewer than --samples 9: "
            "add --allow-fewer to calibrate on 5",
        ),
        (
            ['{"text": "a"}', '{"text": ""}'],
            ["--field", "text"],
            "line 2 of {f}: the sample tokenizes to nothing",
        ),
        (TEXTS, ["--pack"], "--pack needs --seq-len L: the length of every block"),
        (
            TEXTS,
            ["--act-scales", "/nonexistent/x.pt"],
            "cannot write /nonexistent/x.pt: folder /nonexistent does not exist",
        ),
        (
            TEXTS,
            ["--act-scales", "{d}/x.txt"],
            "--act-scales writes PT: give a file name ending in .pt",
        ),
    ],
)
def test_errors(cli, tmp_path: Path, lines, extra, message) -> None:
    corpus = _write(tmp_path / ("c.jsonl" if "--field" in extra else "c.txt"), lines)
    extra = [e.replace("{d}", str(tmp_path)) for e in extra]
    r = cli("calibrate", "--file", str(corpus), "--model", "tiny", *extra)
    assert r.code == 2
    assert r.err == "Error: " + message.replace("{f}", str(corpus)) + "\n"
    assert list(tmp_path.iterdir()) == [corpus]  # no partial file


def test_allow_fewer_goes_on(cli, tmp_path: Path) -> None:
    corpus = _write(tmp_path / "c.txt", TEXTS)
    r = cli(
        "calibrate",
        "--file",
        str(corpus),
        "--model",
        "tiny",
        "--samples",
        "9",
        "--allow-fewer",
        "-f",
        "json",
    )
    assert r.code == 0 and json.loads(r.out)["samples"] == 5


def _launch(tmp_path: Path, name: str, nproc: int, env_extra: dict[str, str]) -> Path:
    corpus = tmp_path / "c.txt"
    if not corpus.exists():
        _write(corpus, TEXTS * 3)
    out = tmp_path / f"{name}.safetensors"
    args = [
        "-m",
        "optinspect",
        "calibrate",
        "--file",
        str(corpus),
        "--model",
        "tiny",
        "--batch-size",
        "2",
        "--act-scales",
        str(tmp_path / f"{name}.pt"),
        "--out",
        str(out),
        "--device",
        "cpu",
        "-f",
        "json",
    ]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", **env_extra}
    if nproc > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(nproc),
            "--master-port",
            "29531",
            *args,
        ]
    else:
        cmd = [sys.executable, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_process(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    one = _launch(tmp_path, "one", 1, {})
    two = _launch(tmp_path, "two", 2, {})
    a = torch.load(tmp_path / "one.pt", weights_only=True)
    b = torch.load(tmp_path / "two.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit for bit
    fa, fb = load_file(str(one)), load_file(str(two))
    assert fa.keys() == fb.keys()
    for key in fa:
        if key.endswith(("/histogram", "/tokens", "/min", "/max", "/absmax")):
            assert torch.equal(fa[key], fb[key]), key
        else:
            torch.testing.assert_close(fa[key], fb[key], rtol=1e-12, atol=1e-12, equal_nan=True)


def test_the_act_scales_picture_is_each_input_sorted_from_its_max_down(load_tiny) -> None:
    # The page's chart (for HTML): one line per linear input, read at evenly spaced shares
    # of its channels, non-increasing, from exactly its max |x| to exactly its least.
    from optinspect.render.calibrate import calibrate_page
    from optinspect.render.page import Chart

    loaded = load_tiny("none")
    result = calibrate(loaded, _ids(loaded), settings=CalibrationSettings(batch_size=2))
    (chart,) = [part for part in calibrate_page(result).parts if isinstance(part, Chart)]
    assert [series.name for series in chart.series] == [m.name for m in result.inputs]
    assert len(chart.x) == 201 and chart.x[0] == 0 and chart.x[-1] == 100
    for series in chart.series:
        scales = result.act_scales()[series.name]
        values = series.values
        assert len(values) == len(chart.x) and None not in values
        assert all(a >= b for a, b in itertools.pairwise(values))
        # float32 channels read as float64: the ends are the very values, not estimates.
        assert values[0] == float(scales.max()) and values[-1] == float(scales.min())
    # A record without its channels (rebuilt from JSON) has no picture, and still a page.
    bare = calibrate_page(dataclasses.replace(result, channels={}))
    assert not [part for part in bare.parts if isinstance(part, Chart)]

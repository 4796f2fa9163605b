"""``optinspect calibrate``: per-channel activation statistics for quantization tools."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .options import InputOptions, LoadOptions, Quant, ViewFormat, ViewFormatOpt, model_command

if TYPE_CHECKING:
    from ..calibrate import CalibrationResult
    from ..engine.distributed import Ranks

VERB = "calibrate"

FieldOpt = Annotated[
    str | None,
    typer.Option("--field", metavar="NAME", help="Read JSON lines; each sample is this field."),
]
SamplesOpt = Annotated[
    int | None,
    typer.Option(
        "--samples",
        "-n",
        metavar="N",
        help="Take N samples from a seeded shuffle (blocks with --pack); default: all, in order.",
    ),
]
SeedOpt = Annotated[
    int,
    typer.Option("--seed", metavar="S", help="Seed of the --samples shuffle (SmoothQuant's 42)."),
]
SeqLenOpt = Annotated[
    int | None,
    typer.Option(
        "--seq-len", metavar="L", help="Cut each sample to L tokens (block size with --pack)."
    ),
]
PackOpt = Annotated[
    bool,
    typer.Option("--pack", help="Join the samples and cut blocks of exactly --seq-len tokens."),
]
AllowFewerOpt = Annotated[
    bool, typer.Option("--allow-fewer", help="Go on with fewer samples than --samples.")
]
ActScalesOpt = Annotated[
    Path | None,
    typer.Option("--act-scales", metavar="FILE.pt", help="Write SmoothQuant's act_scales file."),
]
ActShiftsOpt = Annotated[
    Path | None,
    typer.Option("--act-shifts", metavar="FILE.pt", help="Write OmniQuant's act_shifts file."),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", metavar="FILE.safetensors", help="Write every statistic as safetensors."
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite output files that exist.")]


@model_command(reads="batches", verb=VERB, defaults={"quant": Quant.none})
def calibrate_command(
    field: FieldOpt = None,
    samples: SamplesOpt = None,
    seed: SeedOpt = 42,
    seq_len: SeqLenOpt = None,
    pack: PackOpt = False,
    allow_fewer: AllowFewerOpt = False,
    act_scales: ActScalesOpt = None,
    act_shifts: ActShiftsOpt = None,
    out: OutOpt = None,
    force: ForceOpt = False,
    fmt: ViewFormatOpt = ViewFormat.table,
    *,
    load: LoadOptions,
    inputs: InputOptions,
) -> None:
    """Collect, over a calibration set, per-input-channel statistics of every linear layer
    (max |x|, min, max, mean |x|, mean, sum of squares, an |x| histogram) and a summary of
    every module's output: the act_scales SmoothQuant reads, OmniQuant's act_shifts, or all
    of it as safetensors. Full precision by default (--quant none).

    Under torchrun each rank runs its share of the batches; rank 0 writes.

    Examples:

      optinspect calibrate --file pile_val.jsonl --field text --samples 512 --seq-len 512
      --model facebook/opt-6.7b --act-scales act_scales/opt-6.7b.pt

      optinspect calibrate --file wiki.txt --samples 128 --seq-len 2048 --pack
      --out stats.safetensors

      torchrun --nproc-per-node 8 -m optinspect calibrate --file pile_val.jsonl --field text
      --model facebook/opt-66b --act-scales opt-66b.pt
    """
    from ..engine.distributed import agree, launched, process_group
    from ..errors import OptinspectError

    ranks = launched()
    device = _rank_device(load.device, ranks)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    settings_values = {
        "field": field,
        "samples": samples,
        "seed": seed,
        "seq_len": seq_len,
        "pack": pack,
        "allow_fewer": allow_fewer,
    }
    with process_group(ranks, backend):
        error: str | None = None
        texts: list[str] = []
        try:
            paths = _check_outputs(act_scales, act_shifts, out, force) if ranks.leader else {}
            texts, max_positions = _prepare(load, inputs, **settings_values)
        except OptinspectError as e:
            if not ranks.many:
                raise
            error = str(e)
        fingerprint = {
            "model": load.model,
            "quant": load.quant,
            "dtype": load.dtype,
            "settings": json.dumps({**settings_values, "batch_size": inputs.batch_size}),
            "samples": hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16],
        }
        agree(ranks, fingerprint, error)
        result = _run(load, inputs, ranks, device, texts, max_positions, **settings_values)
    if not ranks.leader:
        return
    _write_files(result, paths)
    if fmt is ViewFormat.json:
        from ..render.common import write_json

        write_json(sys.stdout, result.as_dict())
    else:
        from ..render.calibrate import render_calibration
        from .common import stdout_console

        render_calibration(stdout_console(), result)


def _rank_device(device: str, ranks: Ranks) -> str:
    """The device this rank computes on: its own GPU under a launcher."""
    if device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{ranks.local_rank}" if ranks.many else "cuda"
        return "cpu" if device == "auto" else device
    return device


def _check_outputs(
    act_scales: Path | None, act_shifts: Path | None, out: Path | None, force: bool
) -> dict[str, Path]:
    """Every output path, checked before anything loads; refused when two are one file."""
    from ..engine.preflight import check_output_path
    from ..errors import UsageError

    wanted = {
        "--act-scales": (act_scales, ".pt"),
        "--act-shifts": (act_shifts, ".pt"),
        "--out": (out, ".safetensors"),
    }
    paths: dict[str, Path] = {}
    for option, (path, suffix) in wanted.items():
        if path is None:
            continue
        target = check_output_path(path, force=force, suffix=suffix, option=option)
        for other, known in paths.items():
            if known.resolve() == target.resolve():
                raise UsageError(f"{other} and {option} name the same file: give each its own")
        paths[option] = target
    return paths


def _prepare(
    load: LoadOptions,
    inputs: InputOptions,
    *,
    field: str | None,
    samples: int | None,
    seed: int,
    seq_len: int | None,
    pack: bool,
    allow_fewer: bool,
) -> tuple[list[str], int]:
    """The chosen samples' texts and the model's positions; every check before loading."""
    from ..engine.preflight import preflight
    from ..engine.samples import choose, read_samples, shuffled
    from ..errors import UsageError

    if seq_len is not None and seq_len < 1:
        raise UsageError(f"--seq-len must be at least 1, not {seq_len}")
    if pack and seq_len is None:
        raise UsageError("--pack needs --seq-len L: the length of every block")
    if samples is not None and samples < 1:
        raise UsageError(f"--samples must be at least 1, not {samples}")
    plan = preflight(load, batch_size=inputs.batch_size)
    max_positions = int(plan.config.max_position_embeddings)
    if seq_len is not None and seq_len > max_positions:
        raise UsageError(
            f"--seq-len {seq_len} is more than the {max_positions} positions of {load.model}"
        )
    texts = read_samples(inputs.text, inputs.file, field=field)
    if not texts:
        raise UsageError("the input holds no samples: give at least one line of text")
    if pack:  # --samples counts blocks: the shuffled order is read until they are full
        order = shuffled(len(texts), seed) if samples is not None else range(len(texts))
        return [texts[i] for i in order], max_positions
    return choose(texts, samples, seed=seed, allow_fewer=allow_fewer), max_positions


def _run(
    load: LoadOptions,
    inputs: InputOptions,
    ranks: Ranks,
    device: str,
    texts: list[str],
    max_positions: int,
    *,
    field: str | None,
    samples: int | None,
    seed: int,
    seq_len: int | None,
    pack: bool,
    allow_fewer: bool,
) -> CalibrationResult:
    from ..calibrate import CalibrationSettings, calibrate
    from ..engine.samples import pack_blocks, tokenize_samples
    from .common import progress

    loaded = load.load(device=device) if load.device_map is None else load.load()
    tokenized = tokenize_samples(
        loaded.tokenizer,
        texts,
        seq_len=seq_len,
        max_positions=min(max_positions, loaded.max_positions),
        truncate=inputs.truncate,
    )
    if pack:
        assert seq_len is not None
        ids = pack_blocks(tokenized, seq_len, samples, allow_fewer=allow_fewer)
    else:
        ids = list(tokenized)
    settings = CalibrationSettings(
        file=str(inputs.file) if inputs.file is not None else inputs.text and "-",
        field=field,
        samples=samples,
        seed=seed,
        seq_len=seq_len,
        pack=pack,
        batch_size=inputs.batch_size,
        truncate=inputs.truncate,
        allow_fewer=allow_fewer,
    )
    comm = device if device.startswith("cuda") else "cpu"
    total_tokens = sum(len(i) for i in ids)
    with progress(
        ranks.leader, "calibrating", streams=False, samples=len(ids), tokens=total_tokens
    ) as advance:
        return calibrate(loaded, ids, settings=settings, ranks=ranks, device=comm, advance=advance)


def _write_files(result: CalibrationResult, paths: dict[str, Path]) -> None:
    """Each requested file, atomically; a note on stderr names it."""
    import torch

    from ..engine.saving import write_atomic
    from .common import stderr_console

    err = stderr_console()
    for option, path in paths.items():
        if option == "--act-scales":
            write_atomic(path, lambda tmp: torch.save(result.act_scales(), tmp))
        elif option == "--act-shifts":
            write_atomic(path, lambda tmp: torch.save(result.act_shifts(), tmp))
        else:
            from safetensors.torch import save_file

            write_atomic(
                path,
                lambda tmp: save_file(result.tensors(), str(tmp), metadata=result.metadata()),
            )
        err.print(f"wrote {option[2:]} to {path}", highlight=False, soft_wrap=True)

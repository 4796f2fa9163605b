"""``optinspect calibrate``: per-channel activation statistics for quantization tools."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..model.family import config_value
from .jobs import Job, plan_of, run_job, with_umask
from .options import InputOptions, LoadOptions, Quant, ViewFormat, ViewFormatOpt, model_command

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from ..engine.distributed import Ranks
    from ..engine.preflight import Plan
    from ..model.loading import LoadedModel
    from ..results.calibration import CalibrationResult
    from .jobs import Context

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

    \b
      optinspect calibrate --file val.jsonl --field text -n 512 --seq-len 512
      optinspect calibrate --file val.jsonl --field text --act-scales opt-1.3b.pt
      optinspect calibrate --file wiki.txt --seq-len 2048 --pack -o s.safetensors
      torchrun --nproc-per-node 8 -m optinspect calibrate -F val.txt -n 512
    """
    from ..engine.distributed import launched

    ranks = launched()
    values = {
        "field": field,
        "samples": samples,
        "seed": seed,
        "seq_len": seq_len,
        "pack": pack,
        "allow_fewer": allow_fewer,
        "batch_size": inputs.batch_size,
        "truncate": inputs.truncate,
        "source": str(inputs.file) if inputs.file is not None else inputs.text and "-",
    }
    outputs = (act_scales, act_shifts, out, force)
    if ranks.many:
        result = _calibrate_ranks(load, inputs, ranks, outputs, values)
        if result is None:  # another rank's: rank 0 writes
            return
    else:
        from .common import progress

        paths = _check_outputs(*outputs)
        _check_values(seq_len=seq_len, pack=pack, samples=samples)
        job = Job(
            "calibrate",
            load,
            checks={"batch_size": inputs.batch_size},
            params={
                **values,
                "model": load.model,
                "outputs": {k: str(v) for k, v in paths.items()},
            },
            texts=_read(inputs, field),
        )
        with progress(True, "calibrating", streams=False, totals=True) as advance:
            (result,) = run_job(with_umask(job), advance)
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


def _check_values(*, seq_len: int | None, pack: bool, samples: int | None) -> None:
    from ..errors import UsageError

    if seq_len is not None and seq_len < 1:
        raise UsageError(f"--seq-len must be at least 1, not {seq_len}")
    if pack and seq_len is None:
        raise UsageError("--pack needs --seq-len L: the length of every block")
    if samples is not None and samples < 1:
        raise UsageError(f"--samples must be at least 1, not {samples}")


def _read(inputs: InputOptions, field: str | None) -> Iterator[str]:
    """The samples, read as the job asks for them (a server's job: as they are sent)."""
    from ..engine.inputs import peek
    from ..engine.samples import iter_samples
    from ..errors import UsageError

    texts = peek(iter_samples(inputs.text, inputs.file, field=field))
    if texts is None:
        raise UsageError("the input holds no samples: give at least one line of text")
    return texts


def _choose(
    plan: Plan,
    samples_read: Iterable[str],
    *,
    model: str,
    samples: int | None,
    seed: int,
    seq_len: int | None,
    pack: bool,
    allow_fewer: bool,
) -> tuple[list[str], int]:
    """The samples to run, and the model's positions; checked against its config. The
    input is read to its end here: a seeded shuffle needs all of it."""
    from ..engine.samples import choose, shuffled
    from ..errors import UsageError

    texts = list(samples_read)
    max_positions = int(config_value(plan.config, "max_position_embeddings"))
    if seq_len is not None and seq_len > max_positions:
        raise UsageError(
            f"--seq-len {seq_len} is more than the {max_positions} positions of {model}"
        )
    if pack:  # --samples counts blocks: the shuffled order is read until they are full
        order = shuffled(len(texts), seed) if samples is not None else range(len(texts))
        return [texts[i] for i in order], max_positions
    return choose(texts, samples, seed=seed, allow_fewer=allow_fewer), max_positions


def compute(
    ctx: Context,
    plan: Plan | None,
    texts: Iterable[str],
    *,
    model: str,
    outputs: dict[str, str],
    **values: Any,
) -> Iterator[CalibrationResult]:
    """The calibrate job of one process, where the model is: it writes the files, and
    yields the result without its per-channel tensors (the files hold them)."""
    import dataclasses

    from ..engine.distributed import Ranks

    chosen, max_positions = _choose(plan_of(plan), texts, model=model, **_choice(values))
    loaded = ctx.model()
    comm = "cuda" if loaded.device.startswith("cuda") else "cpu"
    result = _calibrate(loaded, chosen, max_positions, values, Ranks(), comm, ctx.advance)
    _write_files(result, {k: Path(v) for k, v in outputs.items()}, ctx.note)
    yield dataclasses.replace(result, channels={})


def _choice(values: dict[str, Any]) -> dict[str, Any]:
    keys = ("samples", "seed", "seq_len", "pack", "allow_fewer")
    return {key: values[key] for key in keys}


def _calibrate_ranks(
    load: LoadOptions,
    inputs: InputOptions,
    ranks: Ranks,
    outputs: tuple[Path | None, Path | None, Path | None, bool],
    values: dict[str, Any],
) -> CalibrationResult | None:
    """Calibrate as one of the ranks a launcher started; rank 0 writes and gets the result."""
    from ..engine.distributed import agree, process_group
    from ..engine.notes import notes_to
    from ..engine.preflight import preflight
    from ..errors import OptinspectError
    from .common import note, progress

    device = _rank_device(load.device, ranks)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    with process_group(ranks, backend):
        error: str | None = None
        texts: list[str] = []
        max_positions = 0
        paths: dict[str, Path] = {}
        try:
            paths = _check_outputs(*outputs) if ranks.leader else {}
            _check_values(seq_len=values["seq_len"], pack=values["pack"], samples=values["samples"])
            plan = preflight(load, batch_size=inputs.batch_size)
            texts, max_positions = _choose(
                plan, _read(inputs, values["field"]), model=load.model, **_choice(values)
            )
        except OptinspectError as e:
            error = str(e)
        settings = {k: values[k] for k in ("field", *_choice(values), "batch_size")}
        fingerprint = {
            "model": load.model,
            "quant": load.quant,
            "dtype": load.dtype,
            "settings": json.dumps(settings),
            "samples": hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16],
        }
        agree(ranks, fingerprint, error)
        loaded = load.load(device=device) if load.device_map is None else load.load()
        comm = device if device.startswith("cuda") else "cpu"
        with progress(ranks.leader, "calibrating", streams=False, totals=True) as advance:
            # Every rank tokenizes every sample: the leader alone tells what --truncate cut.
            listener = getattr(advance, "note", note) if ranks.leader else None
            with notes_to(listener):
                result = _calibrate(loaded, texts, max_positions, values, ranks, comm, advance)
    if not ranks.leader:
        return None
    _write_files(result, paths, note)
    return result


def _calibrate(
    loaded: LoadedModel,
    texts: list[str],
    max_positions: int,
    values: dict[str, Any],
    ranks: Ranks,
    comm: str,
    advance: Callable[..., None],
) -> CalibrationResult:
    """Tokenize (and pack) the chosen samples and run them through ``loaded``."""
    from ..analyses.calibrate import CalibrationSettings, calibrate
    from ..engine.samples import pack_blocks, tokenize_samples

    seq_len = values["seq_len"]
    tokenized = tokenize_samples(
        loaded.tokenizer,
        texts,
        seq_len=seq_len,
        max_positions=min(max_positions, loaded.max_positions),
        truncate=values["truncate"],
    )
    if values["pack"]:
        assert seq_len is not None
        ids = pack_blocks(tokenized, seq_len, values["samples"], allow_fewer=values["allow_fewer"])
    else:
        ids = list(tokenized)
    settings = CalibrationSettings(
        file=values["source"],
        field=values["field"],
        samples=values["samples"],
        seed=values["seed"],
        seq_len=seq_len,
        pack=values["pack"],
        batch_size=values["batch_size"],
        truncate=values["truncate"],
        allow_fewer=values["allow_fewer"],
    )
    advance(0, 0, totals=(len(ids), sum(len(i) for i in ids)))
    return calibrate(loaded, ids, settings=settings, ranks=ranks, device=comm, advance=advance)


def _write_files(
    result: CalibrationResult, paths: dict[str, Path], note: Callable[[str], None]
) -> None:
    """Each requested file, atomically; a note on stderr names it (``wrote PATH``, as
    ``trace --save`` and ``--plot`` say)."""
    from ..engine.saving import save_safetensors, save_torch

    for option, path in paths.items():
        if option == "--act-scales":
            save_torch(path, result.act_scales())
        elif option == "--act-shifts":
            save_torch(path, result.act_shifts())
        else:
            save_safetensors(path, result.tensors(), result.metadata())
        note(f"wrote {path}")

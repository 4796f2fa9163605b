"""``optinspect calibrate``: per-channel activation statistics for quantization tools."""

from __future__ import annotations

from typing import Annotated

import typer

from ..analyses.job import Job
from .jobs import run_job, with_umask
from .options import (
    Format,
    InputOptions,
    LoadOptions,
    Quant,
    ViewFormatOpt,
    file_option,
    model_command,
)

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


PT = "FILE.pt"
ActScalesOpt = file_option("--act-scales", metavar=PT, help="Write SmoothQuant's act_scales file.")
ActShiftsOpt = file_option("--act-shifts", metavar=PT, help="Write OmniQuant's act_shifts file.")
OutOpt = file_option(
    "--out", "-o", metavar="FILE.safetensors", help="Write every statistic as safetensors."
)
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
    fmt: ViewFormatOpt = Format.table,
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
    outputs = {
        "--act-scales": (act_scales, ".pt"),
        "--act-shifts": (act_shifts, ".pt"),
        "--out": (out, ".safetensors"),
    }
    if ranks.many:
        from ..analyses.calibrate import calibrate_ranks
        from .common import progress
        from .jobs import Here

        with progress(ranks.leader, "calibrating", streams=False, totals=True) as advance:
            result = calibrate_ranks(
                Here(load, advance), load, ranks,
                text=inputs.text, file=inputs.file, outputs=outputs, force=force, values=values,
            )  # fmt: skip
        if result is None:  # another rank's: rank 0 writes
            return
    else:
        from ..engine.preflight import check_output_paths
        from ..engine.samples import check_sample_options, read_samples
        from .common import progress

        paths = check_output_paths(outputs, force=force)
        check_sample_options(seq_len=seq_len, pack=pack, samples=samples)
        job = Job(
            "calibrate",
            load,
            checks={"batch_size": inputs.batch_size},
            params={
                **values,
                "model": load.model,
                "outputs": {k: str(v) for k, v in paths.items()},
            },
            texts=read_samples(inputs.text, inputs.file, field=field),
        )
        with progress(True, "calibrating", streams=False, totals=True) as advance:
            (result,) = run_job(with_umask(job), advance)
    from ..render.calibrate import calibrate_page
    from .output import emit_result

    emit_result(fmt.value, result, calibrate_page)

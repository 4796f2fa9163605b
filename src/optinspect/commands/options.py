"""Option types shared by the commands, declared once so every command spells them alike."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

DEFAULT_MODEL = (
    "facebook/opt-1.3b"  # mirrored in loading.DEFAULT_MODEL; kept here so --help needs no torch
)


class Quant(str, Enum):
    int8 = "8bit"
    nf4 = "4bit"
    none = "none"


class Dtype(str, Enum):
    auto = "auto"
    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"


class TraceFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        envvar="OPTINSPECT_MODEL",
        help="Hub id, local folder, or 'tiny' (the built-in random-weight checkpoint).",
    ),
]
QuantOpt = Annotated[
    Quant, typer.Option("--quant", "-q", help="bitsandbytes quantization: LLM.int8, NF4 or none.")
]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N."),
]
DtypeOpt = Annotated[
    Dtype,
    typer.Option(
        "--dtype", help="Compute dtype; auto is float16 when quantized or on CUDA, else float32."
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show third-party warnings and progress bars.")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")]
FilterOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        help="Glob on dotted module names, e.g. '*.fc1'; repeatable; narrows --layer.",
    ),
]
DeviceMapOpt = Annotated[
    str | None,
    typer.Option(
        "--device-map",
        help="Spread a large model with accelerate: auto, balanced or sequential.",
    ),
]
MaxMemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--max-memory", help="Per-device caps for --device-map, e.g. 'cuda:0=10GiB,cpu=30GiB'."
    ),
]
OffloadDirOpt = Annotated[
    str | None,
    typer.Option("--offload-dir", help="Folder for weights offloaded to disk by --device-map."),
]


class ViewFormat(str, Enum):
    """Output of the lens and attention commands: a table for people or JSON for scripts."""

    table = "table"
    json = "json"


ViewFormatOpt = Annotated[
    ViewFormat, typer.Option("--format", "-f", help="table for people, json for scripts.")
]


class TableFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


TableFormatOpt = Annotated[
    TableFormat,
    typer.Option("--format", "-f", help="table for people, json or csv for scripts."),
]

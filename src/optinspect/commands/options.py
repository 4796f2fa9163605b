"""Options shared by the commands, declared once so every command spells them alike.

    @model_command(reads="batches", verb="trace")
    def trace_command(layer: LayerOpt = None, *, load: LoadOptions, inputs: InputOptions): ...

``model_command`` adds the loading options (``--model``, ``--quant``,
``--device``, ``--dtype``, ``--device-map``, ``--max-memory``,
``--offload-dir``, ``--verbose``, ``--no-server``), the input options (TEXT, ``-``,
``--file``, ``--truncate``, and ``--batch-size`` where the command batches)
and ``--debug`` to a command's own options, and hands them to it as two
records. No torch here: ``--help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer

from ..model.settings import DEFAULT_MODEL, LoadSettings

if TYPE_CHECKING:
    from ..model.loading import LoadedModel


class Quant(str, Enum):
    int8 = "8bit"
    nf4 = "4bit"
    none = "none"


class Dtype(str, Enum):
    auto = "auto"
    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"


class Format(str, Enum):
    """Every output format, in one vocabulary; each command offers some (``format_option``)."""

    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    html = "html"


def format_help(offered: tuple[Format, ...]) -> str:
    """``table for people; json, jsonl or csv for scripts; html: one self-contained page.``,
    of just the formats ``offered``."""
    data = [f.value for f in offered if f in (Format.json, Format.jsonl, Format.csv)]
    parts = ["table for people"] if Format.table in offered else []
    if data:
        listed = ", ".join(data[:-1]) + " or " + data[-1] if len(data) > 1 else data[0]
        parts.append(f"{listed} for scripts")
    if Format.html in offered:
        parts.append("html: one self-contained page")
    return "; ".join(parts) + "."


def format_option(*offered: Format, help: str | None = None) -> Any:
    """The ``--format`` option of a command that offers ``offered``: Typer lists and checks
    just those, case-blind, and the command receives a ``Format``; ``help`` defaults to
    ``format_help``'s."""
    # Typer takes its choices from an enum: one of just these names, per command.
    choices = Enum("Format", {f.name: f.value for f in offered}, type=str)  # type: ignore[misc]
    return Annotated[
        choices,
        typer.Option(
            "--format",
            "-f",
            case_sensitive=False,
            help=help or format_help(offered),
            callback=lambda value: None if value is None else Format(value.value),
        ),
    ]


def file_option(*flags: str, metavar: str = "PATH", help: str) -> Any:
    """An option naming a file to write (None: not written)."""
    return Annotated[Path | None, typer.Option(*flags, metavar=metavar, help=help)]


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        envvar="OPTINSPECT_MODEL",
        metavar="MODEL",
        help="Hub id, local folder, 'tiny' or 'tiny-llama' (built-in random-weight checkpoints).",
    ),
]
QuantOpt = Annotated[
    Quant,
    typer.Option(
        "--quant",
        "-q",
        case_sensitive=False,
        help="bitsandbytes quantization: LLM.int8, NF4 or none.",
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        metavar="DEVICE",
        help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.",
    ),
]
DtypeOpt = Annotated[
    Dtype,
    typer.Option(
        "--dtype",
        case_sensitive=False,
        help="Compute dtype; auto is float16 when quantized or on CUDA, else float32.",
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show third-party warnings and progress bars.")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")]
NoServerOpt = Annotated[
    bool,
    typer.Option(
        "--no-server",
        envvar="OPTINSPECT_NO_SERVER",
        help="Load the model here even when 'optinspect serve' has it loaded.",
    ),
]
FilterOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        metavar="GLOB",
        help="Glob on dotted module names, e.g. '*.fc1'; repeatable; narrows --layer.",
    ),
]
DeviceMapOpt = Annotated[
    str | None,
    typer.Option(
        "--device-map",
        metavar="STRATEGY",
        help="Spread a large model with accelerate: auto, balanced or sequential.",
    ),
]
MaxMemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--max-memory",
        metavar="CAPS",
        help="Per-device caps for --device-map, e.g. 'cuda:0=10GiB,cpu=30GiB'.",
    ),
]
OffloadDirOpt = Annotated[
    str | None,
    typer.Option(
        "--offload-dir", metavar="DIR", help="Folder for weights offloaded to disk by --device-map."
    ),
]


#: The --format options of the commands, each offering what its records can be written as.
ViewFormatOpt = format_option(Format.table, Format.json, Format.html)
TableFormatOpt = format_option(Format.table, Format.json, Format.csv, Format.html)
ResultFormatOpt = format_option(Format.table, Format.json, Format.jsonl, Format.html)
TraceFormatOpt = format_option(Format.table, Format.json, Format.jsonl, Format.csv, Format.html)
LayerOpt = Annotated[
    str | None,
    typer.Option(
        "--layer",
        "-l",
        metavar="SPEC",
        help="Decoder layers to show in full: 0, 0,5, 3-7, -1 (the last) or all. "
        "Without it, an overview: embeddings, each layer's output, final norm, head.",
    ),
]
HeadOpt = Annotated[
    int | None,
    typer.Option(
        "--head",
        metavar="N",
        help="The attention head to show (-1: the last); without it, the mean of all heads.",
    ),
]
TopKOpt = Annotated[
    int,
    typer.Option(
        "--top-k",
        "-k",
        metavar="K",
        help="Show the K most likely next tokens, with probabilities.",
    ),
]
FileOpt = Annotated[
    Path | None,
    typer.Option("--file", "-F", metavar="PATH", help="Read sentences from a file, one per line."),
]
TruncateOpt = Annotated[
    bool, typer.Option("--truncate", help="Cut text longer than the model's positions.")
]
BatchSizeOpt = Annotated[
    int, typer.Option("--batch-size", "-b", metavar="N", help="Sentences per forward pass.")
]


@dataclass(frozen=True)
class LoadOptions(LoadSettings):
    """The loading options every model command takes: the settings, and whether a running
    ``optinspect serve`` with these settings may answer (``--no-server`` says not)."""

    server: bool = True

    def load(self, *, attn_implementation: str | None = None, **changes: Any) -> LoadedModel:
        """Load the model as these options say (``changes`` override some), behind a
        spinner on stderr."""
        from .common import load_with_status

        options = dataclasses.replace(self, **changes)
        return load_with_status(options, attn_implementation=attn_implementation)


@dataclass(frozen=True)
class InputOptions:
    """Where the sentences come from: TEXT, ``-`` (stdin) or ``--file``."""

    text: str | None = None
    file: Path | None = None
    truncate: bool = False
    batch_size: int = 1
    verb: str = "trace"

    def read(self) -> tuple[Iterator[str] | None, bool]:
        """The sentences, read lazily, and whether there may be many (a file or stdin).

        None when a file or stdin holds no sentence, found before any model loads.
        """
        from ..engine.inputs import peek, read_texts

        texts, many = read_texts(self.text, self.file, verb=self.verb)
        return peek(texts), many


def _keyword(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


_LOAD_PARAMETERS = (
    _keyword("model", ModelOpt, DEFAULT_MODEL),
    _keyword("quant", QuantOpt, Quant.int8),
    _keyword("device", DeviceOpt, "auto"),
    _keyword("dtype", DtypeOpt, Dtype.auto),
    _keyword("device_map", DeviceMapOpt, None),
    _keyword("max_memory", MaxMemoryOpt, None),
    _keyword("offload_dir", OffloadDirOpt, None),
    _keyword("verbose", VerboseOpt, False),
    _keyword("no_server", NoServerOpt, False),
)
_DEBUG = _keyword("debug", DebugOpt, False)

_F = TypeVar("_F", bound=Callable[..., Any])


def _text_parameter(verb: str, many: bool) -> inspect.Parameter:
    if many:
        help_text = f"The text to {verb}; - reads one sentence per line from stdin."
        annotation: Any = Annotated[str | None, typer.Argument(metavar="TEXT", help=help_text)]
        return _keyword("text", annotation, None)
    annotation = Annotated[str, typer.Argument(metavar="TEXT", help=f"The text to {verb}.")]
    return _keyword("text", annotation, inspect.Parameter.empty)


def _value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def model_command(
    *,
    reads: Literal["batches", "one"] | None = None,
    verb: str = "trace",
    loads: bool = True,
    defaults: dict[str, Any] | None = None,
    serves: bool = True,
) -> Callable[[_F], _F]:
    """Give a command the shared options: loading (``loads``) and input (``reads``).

    ``reads="batches"`` adds TEXT (``-`` for stdin), ``--file``, ``--truncate``
    and ``--batch-size``; ``reads="one"`` adds a required TEXT and
    ``--truncate``. The command receives ``load: LoadOptions`` and
    ``inputs: InputOptions`` instead of the separate values; ``verb`` names it
    in the help and in input errors. ``defaults`` changes a loading option's
    default for this command (``{"quant": Quant.none}``). ``serves=False`` leaves out
    ``--no-server`` (for ``serve`` itself).
    """

    def wrap(command: _F) -> _F:
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in inspect.signature(command, eval_str=True).parameters.values()
            if p.name not in ("load", "inputs")
        ]
        extra: list[inspect.Parameter] = []
        if reads is not None:
            extra.append(_keyword("truncate", TruncateOpt, False))
        if reads == "batches":
            extra[:0] = [_keyword("file", FileOpt, None)]
            extra.append(_keyword("batch_size", BatchSizeOpt, 8))
        text = [_text_parameter(verb, reads == "batches")] if reads is not None else []
        shared = [
            p.replace(default=defaults[p.name]) if defaults and p.name in defaults else p
            for p in (_LOAD_PARAMETERS if loads else ())
            if serves or p.name != "no_server"
        ]

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            values.pop("debug", None)  # read by cli.run before parsing
            if loads:
                fields = {p.name: _value(values.pop(p.name, False)) for p in _LOAD_PARAMETERS}
                fields["server"] = not fields.pop("no_server")
                values["load"] = LoadOptions(**fields)
            if reads is not None:
                values["inputs"] = InputOptions(
                    text=values.pop("text"),
                    file=values.pop("file", None),
                    truncate=values.pop("truncate"),
                    batch_size=values.pop("batch_size", 1),
                    verb=verb,
                )
            return command(**values)

        run.__signature__ = inspect.Signature([*text, *own, *extra, *shared, _DEBUG])  # type: ignore[attr-defined]
        run.__annotations__ = {}  # Typer reads the signature; the hints live there
        return run  # type: ignore[return-value]

    return wrap

"""The Python API: one function per command, its options as keyword arguments, and
results that show themselves in a notebook.

    import optinspect as oi
    model = oi.load("tiny", quant="8bit")
    oi.trace(model, "The quick brown fox", layer="0")      # a table, in Jupyter or print()
    oi.params(model).report.total                          # the record's attributes
    oi.lens(model, ["one sentence", "another"], top_k=3)[1].as_dict()

Each function takes what ``load`` returns (``params`` and ``tree`` also a model name:
they read no weights), then the text where the command reads one (a sentence, or a list
of them), and runs the command's job through the same checks and compute function as
the CLI, on the model given. ``trace``, ``lens`` and ``compare`` return a ``ShownList``,
one ``Shown`` result per sentence; the others one ``Shown``. A ``Shown`` reads through to
its record (``result.modules``, ``result.as_dict()``) and shows its page in Jupyter
(``render.notebook``).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import API
from .analyses.job import run_held, settings_of
from .engine.inputs import given_texts
from .errors import UsageError
from .model.loading import LoadedModel
from .model.loading import load_model as load  # noqa: F401 (optinspect.load, in __all__)
from .render.notebook import Shown, ShownList
from .results.compare import DEFAULT_TOLERANCE
from .results.outliers import DEFAULT_THRESHOLD
from .results.report import DEFAULT_ROLE, DEFAULT_TOP_K, ReportResult

if TYPE_CHECKING:
    from .engine.selection import LayerSpec
    from .render.page import Page
    from .results.attention import AttentionResult
    from .results.calibration import CalibrationResult
    from .results.outliers import OutlierResult
    from .results.params import ParamsResult
    from .results.sparsity import LayerSparsity
    from .results.tree import TreeResult

__all__ = list(API)  # one function per command, as the package lists them

#: A sentence, several, or none (then ``file`` gives them).
Texts = str | Sequence[str] | None


def layer_spec(layer: LayerSpec | int) -> LayerSpec:
    """A layer spec as the engine reads it: one index (``-1``) becomes its string."""
    return str(layer) if isinstance(layer, int) else layer


def globs_of(filters: str | Sequence[str]) -> tuple[str, ...]:
    """``filters`` as the job's tuple of globs: one glob may come as a string."""
    return (filters,) if isinstance(filters, str) else tuple(filters)


def page_of(command: str) -> Callable[[Any], Page]:
    """The page function of ``command``'s records, ``render.<command>.<command>_page``,
    imported when a result is first shown."""

    def make(result: Any) -> Page:
        module = importlib.import_module(f"optinspect.render.{command}")
        return getattr(module, f"{command}_page")(result)  # type: ignore[no-any-return]

    return make


def shown_each(results: Iterable[Any], command: str) -> list[Shown[Any]]:
    return [Shown(result, page_of(command)) for result in results]


class Traced(ShownList):
    """trace's results, one per sentence, and its FFN sparsity per layer (``ffn``), which
    shows after them as the command's table does."""

    def __init__(self, items: Sequence[Shown[Any]], ffn: Sequence[LayerSparsity] | None) -> None:
        from .render.trace import sparsity_page

        self.ffn = list(ffn or [])
        super().__init__(items, tail=sparsity_page(self.ffn, len(items) > 1) if ffn else None)


def trace(
    model: LoadedModel,
    texts: Texts = None,
    *,
    layer: LayerSpec | int = None,
    filters: str | Sequence[str] = (),
    stats: str | None = None,
    save: str | Path | None = None,
    force: bool = False,
    batch_size: int = 8,
    truncate: bool = False,
    file: str | Path | None = None,
    layers: LayerSpec | int = None,
) -> Traced:
    """Trace one sentence or many: one ``TraceResult`` per sentence, in input order, with
    trace's FFN sparsity as the list's ``ffn`` (and its last table).

    ``layer`` takes a spec (``"0,3-5"``, ``"all"``, ``-1``) or a list of indices; None
    gives the overview (``layers`` is its older name). ``filters`` are globs on dotted
    module names; ``stats`` the table's columns (``"mean,absmax"``); ``save`` a
    ``.safetensors`` file of every output (``force`` overwrites it).
    """
    from .engine.preflight import check_output_path, parse_stats
    from .render.trace import trace_page

    if layer is not None and layers is not None:
        raise UsageError("give layer= or layers=, not both")
    spec = layer_spec(layer if layer is not None else layers)
    stat_names = parse_stats(stats) if stats is not None else None
    if save is not None:
        save = check_output_path(save, force=force, suffix=".safetensors", option="save=")
    values = {"layers": spec, "filters": globs_of(filters), "batch_size": batch_size}
    results, ffn = run_held(
        "trace",
        model,
        checks=values,
        params={**values, "truncate": truncate, "summary": True, "plot": False,
                "save": None if save is None else str(save)},
        texts=given_texts(texts, file, "trace"),
    )  # fmt: skip
    return Traced([Shown(result, partial(trace_page, stats=stat_names)) for result in results], ffn)


def lens(
    model: LoadedModel,
    texts: Texts = None,
    *,
    layer: LayerSpec | int = None,
    top_k: int = 1,
    batch_size: int = 8,
    truncate: bool = False,
    file: str | Path | None = None,
) -> ShownList:
    """The logit lens of each sentence: what every layer (``layer``: a spec, all by
    default) predicts next, the ``top_k`` most likely tokens; one ``LensResult`` each."""

    values = {"layers": layer_spec(layer), "top_k": top_k, "batch_size": batch_size}
    results, _ = run_held(
        "lens",
        model,
        checks=values,
        params={**values, "truncate": truncate},
        texts=given_texts(texts, file, "read through the lens"),
    )
    return ShownList(shown_each(results, "lens"))


def compare(
    model: LoadedModel,
    texts: Texts = None,
    *,
    against: str = "none",
    against_dtype: str = "auto",
    tolerance: float = DEFAULT_TOLERANCE,
    layer: LayerSpec | int = None,
    filters: str | Sequence[str] = (),
    batch_size: int = 8,
    truncate: bool = False,
    file: str | Path | None = None,
) -> ShownList:
    """Each module's output on ``model`` against the same model loaded with ``against``
    quantization and ``against_dtype`` (loaded for the call, then freed): cosine
    similarity, relative error, max abs difference; one ``CompareResult`` per sentence."""
    from .engine.preflight import check_load_settings

    held = settings_of(model)
    check_load_settings(dataclasses.replace(held, quant=against, dtype=against_dtype))
    selection = {"layers": layer_spec(layer), "filters": globs_of(filters), "tolerance": tolerance}
    results, _ = run_held(
        "compare",
        model,
        checks={**selection, "batch_size": batch_size},
        params={
            **selection,
            "setting": [held.quant, held.dtype],
            "reference": [against, against_dtype],
            "batch_size": batch_size,
            "truncate": truncate,
        },
        texts=given_texts(texts, file, "compare"),
    )
    return ShownList(shown_each(results, "compare"))


def outliers(
    model: LoadedModel,
    texts: Texts = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 8,
    truncate: bool = False,
    file: str | Path | None = None,
) -> Shown[OutlierResult]:
    """LLM.int8 outlier features over all the sentences: the input dimensions of every
    linear layer where |x| reaches ``threshold`` (8-bit layers use their own), and those
    that recur across layers. One ``OutlierResult``."""

    values = {"threshold": threshold, "batch_size": batch_size}
    (result,), _ = run_held(
        "outliers",
        model,
        checks=values,
        params={**values, "truncate": truncate},
        texts=given_texts(texts, file, "inspect"),
    )
    return Shown(result, page_of("outliers"))


def attention(
    model: LoadedModel,
    text: str,
    *,
    layer: int | str = -1,
    head: int | None = None,
    truncate: bool = False,
) -> Shown[AttentionResult]:
    """One layer's attention over ``text`` (eager attention for the call): every head's
    entropy and sink mass, and the weights of ``head`` (or the most focused). One
    ``AttentionResult``."""
    from .engine.preflight import check_text

    check_text(text, "show attention over")
    (result,), _ = run_held(
        "attention",
        model,
        checks={"single_layer": str(layer), "head": head},
        params={"text": text, "layer": str(layer), "head": head, "truncate": truncate},
    )
    return Shown(result, page_of("attention"))


def calibrate(
    model: LoadedModel,
    texts: Texts = None,
    *,
    file: str | Path | None = None,
    field: str | None = None,
    samples: int | None = None,
    seed: int = 42,
    seq_len: int | None = None,
    pack: bool = False,
    allow_fewer: bool = False,
    act_scales: str | Path | None = None,
    act_shifts: str | Path | None = None,
    out: str | Path | None = None,
    force: bool = False,
    batch_size: int = 8,
    truncate: bool = False,
) -> Shown[CalibrationResult]:
    """Per-input-channel statistics of every linear layer over a calibration set (the
    sentences, or ``file``'s lines, or its JSONL ``field``), and a summary of every
    module's output; ``act_scales``, ``act_shifts`` and ``out`` write the files. One
    ``CalibrationResult``, without its per-channel tensors (the files hold them)."""
    from .engine.preflight import check_output_paths
    from .engine.samples import check_sample_options, read_samples

    # Keyed by the CLI's options, as the calibrate job writes them (and its messages say).
    paths = check_output_paths(
        {
            "--act-scales": (act_scales, ".pt"),
            "--act-shifts": (act_shifts, ".pt"),
            "--out": (out, ".safetensors"),
        },
        force=force,
    )
    check_sample_options(seq_len=seq_len, pack=pack, samples=samples)
    if field is not None and file is None:
        raise UsageError("field= reads JSON lines from file=: give file= too")
    if file is not None:
        if texts is not None:
            raise UsageError("give the texts or file=, not both")
        read = read_samples(None, Path(file), field=field)
    else:
        read = given_texts(texts, None, "calibrate on")
        if read is None:
            raise UsageError("calibrate needs at least one sample: the list is empty")
    values = {
        "field": field,
        "samples": samples,
        "seed": seed,
        "seq_len": seq_len,
        "pack": pack,
        "allow_fewer": allow_fewer,
        "batch_size": batch_size,
        "truncate": truncate,
        "source": None if file is None else str(file),
    }
    (result,), _ = run_held(
        "calibrate",
        model,
        checks={"batch_size": batch_size},
        params={
            **values,
            "model": settings_of(model).model,
            "outputs": {option: str(path) for option, path in paths.items()},
        },
        texts=read,
    )
    return Shown(result, page_of("calibrate"))


def params(
    model: LoadedModel | str,
    *,
    by: str = "group",
    loaded: bool = False,
) -> Shown[ParamsResult]:
    """The exact parameter count of ``model`` (a loaded model or a name: the count comes
    from the configuration), broken down ``by`` group, layer, module or type, with the
    bytes of the weights at each precision; ``loaded`` adds what the loaded model holds."""
    from .analyses.params import count_params, inventory_params
    from .results.params import ParamsResult

    name = model if isinstance(model, str) else settings_of(model).model
    if not loaded:
        return Shown(ParamsResult(count_params(inventory_params(name), by=by)), page_of("params"))
    if isinstance(model, str):
        raise UsageError("params(loaded=True) measures a loaded model: pass what load returns")
    (result,), _ = run_held("params", model, checks=None, params={"model": name, "by": by})
    return Shown(result, page_of("params"))


def tree(
    model: LoadedModel | str,
    *,
    depth: int | None = None,
    collapse: bool = True,
) -> Shown[TreeResult]:
    """The module hierarchy of ``model`` (a loaded model or a name; built on the meta
    device from its configuration), down to ``depth``; ``collapse`` folds identical
    decoder layers as ``print(model)`` does."""
    from .analyses.tree import tree_model
    from .engine.preflight import check_depth
    from .results.tree import TreeResult

    check_depth(depth)
    name = model if isinstance(model, str) else settings_of(model).model
    root = tree_model(name, collapse=collapse)
    return Shown(TreeResult(name, root, max_depth=depth, collapsed=collapse), page_of("tree"))


class Report(Shown[ReportResult]):
    """A report that shows itself inline (its pages, as a notebook cell's HTML) and
    ``save``s itself as one self-contained HTML file."""

    @property
    def title(self) -> str:
        from .render.report import report_title

        return report_title(self.record)

    def html(self) -> str:
        """The whole page: inline CSS and SVG, nothing loaded, the records embedded."""
        from .render.report import report_html

        return report_html(self.record)

    def save(self, path: str | Path, *, force: bool = False) -> Path:
        """Write the page to ``path`` (``.html``; ``force`` overwrites a file there),
        atomically; return the path."""
        from .engine.preflight import check_output_path
        from .results.files import write_atomic

        target = check_output_path(path, force=force, suffix=".html", option="save()")
        page = self.html()
        write_atomic(target, lambda tmp: tmp.write_text(page, encoding="utf-8"))
        return target


def report(
    model: LoadedModel,
    text: str,
    *,
    layer: LayerSpec | int = "all",
    filters: str | Sequence[str] = (),
    attention_layer: int | str = -1,
    head: int | None = None,
    top_k: int = DEFAULT_TOP_K,
    role: str = DEFAULT_ROLE,
    compare: str | None = None,
    truncate: bool = False,
) -> Report:
    """Everything optinspect shows of ``text``, from one forward pass: the trace (``layer``,
    ``filters``) with each module's histogram, FFN sparsity, outliers, the attention of
    ``attention_layer`` (``head``), the lens (``top_k``), the series across depth of the
    layers and of ``role``, the parameter count; ``compare`` (a quantization) adds the
    error against it. Shows itself inline; ``.save(path)`` writes the HTML page."""
    from .engine.preflight import check_load_settings, check_text
    from .render.report import report_pages

    text = check_text(text, "report on")
    held = settings_of(model)
    reference = None if compare is None else [compare, "auto"]
    if reference is not None:
        check_load_settings(dataclasses.replace(held, quant=reference[0], dtype=reference[1]))
    spec = layer_spec(layer)
    globs = globs_of(filters)
    (result,), _ = run_held(
        "report",
        model,
        checks={"layers": spec, "filters": globs, "top_k": top_k, "head": head},
        params={
            "text": text,
            "model": held.model,
            "layers": spec,
            "filters": globs,
            "attention_layer": str(attention_layer),
            "head": head,
            "top_k": top_k,
            "role": role,
            "truncate": truncate,
            "setting": [held.quant, held.dtype],
            "compare": reference,
        },
    )
    return Report(result, report_pages)

"""The ``report`` section: one report (every analysis in one forward) against the trace of
every layer and a bare forward, in process, on the same model with eager attention."""

from __future__ import annotations

from typing import Any

from bench_inproc import BARE, paired, rounds
from bench_report import Row, Section
from bench_util import fmt_times, interleave, sentences, wrap_loaded

REPORT = (
    "report: trace + histograms, sparsity, outliers, lens (top 5), attention, params, "
    "then the HTML page"
)
TRACE = "trace --layer all (with the FFN summary, as --format json)"
LENS = "lens --top-k 5 (every layer through the head)"


def report_rows(label: str, loaded: Any, params_spec: str, repeats: int) -> list[Row]:
    """Report, trace and bare forward of one sentence of 16 words on ``loaded``."""
    import torch

    from optinspect.analyses.lens import iter_lens
    from optinspect.analyses.report import build_report
    from optinspect.analyses.sparsity import FfnSparsity
    from optinspect.analyses.trace import iter_trace
    from optinspect.engine.runner import Runner
    from optinspect.render.report import report_html

    (text,) = sentences(1, (16, 16))
    model = loaded.model
    model.set_attn_implementation("eager")  # what report loads; the others run the same kernel
    runner = Runner(loaded, batch_size=1)

    def bare() -> None:
        for _ in runner.run([text]):
            pass

    def trace() -> None:
        sparsity = FfnSparsity(model)
        for _ in iter_trace(loaded, [text], layers="all", sparsity=sparsity):
            pass
        sparsity.summary()

    def lens() -> None:
        for _ in iter_lens(loaded, [text], top_k=5):
            pass

    def report() -> None:
        report_html(build_report(loaded, text, model=params_spec))

    with torch.inference_mode():
        runs = {BARE: bare, TRACE: trace, LENS: lens, REPORT: report}
        series = interleave(runs, repeats, 1, BARE)
    tokens = len(loaded.tokenizer(text)["input_ids"])
    how = f"{rounds(series)}; {label}, one sentence of {tokens} tokens, eager attention"
    ratio = series[REPORT].ratio / series[TRACE].ratio
    apart = series[REPORT].ratio / (series[TRACE].ratio + series[LENS].ratio)
    page = report_html(build_report(loaded, text, model=params_spec)).encode("utf-8")
    size = f"{len(page) / 1e6:.2f} MB" if len(page) >= 1e5 else f"{len(page) / 1e3:.0f} kB"
    return [
        Row(f"{BARE}, {label}", fmt_times(series[BARE].times), how),
        Row(f"{TRACE}, {label}", paired(series[TRACE]), how),
        Row(f"{LENS}, {label}", paired(series[LENS]), how),
        Row(f"{REPORT}, {label}", paired(series[REPORT]), how),
        Row(
            f"report against trace --layer all, {label}",
            f"{ratio:.2f}x",
            how,
            goal="at most 1.5x",
            met=ratio <= 1.5,
        ),
        Row(f"report against trace --layer all and lens run apart, {label}", f"{apart:.2f}x", how),
        Row(
            f"report page size, {label}",
            size,
            f"len(report_html(...)) in UTF-8; {label}, {tokens} tokens, every layer",
            goal="under 3 MB (aim 1 MB)",
            met=len(page) < 3e6,
        ),
    ]


def report(model: Any, shape: str, tokenizer: Any, repeats: int) -> Section:
    """The tiny checkpoint, then ``model`` (random weights of ``shape``)."""
    from optinspect.model.loading import load_model

    tiny = load_model("tiny", quant="none", device="cpu", attn_implementation="eager")
    rows = report_rows("tiny", tiny, "tiny", repeats)
    spec = "facebook/opt-125m" if shape == "opt-125m" else "tiny"
    rows += report_rows(f"{shape} shape", wrap_loaded(model, tokenizer), spec, repeats)
    return Section("report", rows)

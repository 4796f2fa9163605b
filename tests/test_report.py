"""``optinspect report``: one forward pass feeds every analysis, each part is what its own
command prints, and the histograms are the module outputs' on the device."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn.modules import module as torch_module

from conftest import TINY, assert_error, json_of
from optinspect.analyses.report import ReportCollectors, build_report, depth_series
from optinspect.engine.capture import capture
from optinspect.engine.collect import NO_KWARGS, collect
from optinspect.engine.histogram import output_histogram
from optinspect.engine.runner import Runner
from optinspect.engine.stats import token_partials
from optinspect.model.names import layer_root

TEXT = "The quick brown fox jumps over the lazy dog"

#: Report and the other commands load different attention kernels (eager against
#: sdpa): the same sums in another order, so values agree to rounding. In float32 that
#: is a few ulps of the largest magnitude (|x| < 10 in the tiny model): relative 1e-5
#: or absolute 1e-6.
FLOAT32 = (1e-5, 1e-6)
#: 8-bit layers compute in float16 (eps 9.8e-4) on values of magnitude about 1: a few
#: of its ulps, relative 1e-2 or absolute 2e-3.
FLOAT16 = (1e-2, 2e-3)


def assert_same(got: Any, want: Any, tol: tuple[float, float] = FLOAT32, where: str = "") -> None:
    """Equal structures; floats equal within ``tol`` (relative, absolute), all else exactly."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), where
        for key in want:
            assert_same(got[key], want[key], tol, f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, tol, f"{where}[{i}]")
    elif isinstance(want, float):
        assert isinstance(got, (int, float)), where
        rel, abs_ = tol
        assert math.isclose(got, want, rel_tol=rel, abs_tol=abs_), f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


@pytest.fixture(scope="module")
def eager() -> Any:
    from optinspect.model.loading import load_model

    loaded = load_model("tiny", quant="none", device="cpu", attn_implementation="eager")
    # transformers hooks the layers once, at the first pass that asks for attentions:
    # that pass comes now, so the tests see only hooks of their own making.
    for _ in Runner(loaded).run(["warm up"], output_attentions=True):
        pass
    return loaded


@pytest.fixture(scope="module")
def report_doc(cli_module: Any) -> dict:
    return cli_module("report", TEXT, *TINY, "--no-server")


@pytest.fixture(scope="module")
def cli_module() -> Iterator[Any]:
    """The CLI run in-process, its stdout parsed as JSON (module scope: one report run)."""
    import io

    from optinspect.cli import run

    def invoke(*args: str) -> dict:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = run(list(args))
        assert code == 0, args
        return json.loads(out.getvalue())

    yield invoke


@contextlib.contextmanager
def count_forwards(loaded: Any) -> Iterator[list[int]]:
    """How many times the decoder runs inside the block."""
    calls = [0]

    def count(module: Any, args: Any) -> None:
        calls[0] += 1

    handle = loaded.model.model.decoder.register_forward_pre_hook(count)
    try:
        yield calls
    finally:
        handle.remove()


def hooks_on(model: torch.nn.Module) -> list[int]:
    """How many hooks each module and the global tables hold (transformers keeps some
    of its own, so a test compares before and after)."""
    counts = [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    return [
        *counts,
        len(torch_module._global_forward_hooks),
        len(torch_module._global_forward_pre_hooks),
    ]


def test_one_forward_pass_feeds_every_analysis_and_leaves_no_hook(eager) -> None:
    before = hooks_on(eager.model)
    with count_forwards(eager) as calls:
        result = build_report(eager, TEXT, model="tiny")
    assert calls == [1]
    assert hooks_on(eager.model) == before
    assert result.trace.modules and result.lens.layers and result.attention.heads
    assert result.outliers.sentences == 1 and len(result.sparsity) == eager.num_layers


def test_the_model_computes_the_same_logits_under_the_reports_hooks(eager) -> None:
    """Hooks only read: the logits are the very same numbers with and without them."""

    class Logits:
        forward_kwargs = NO_KWARGS

        def __init__(self) -> None:
            self.kept: list[torch.Tensor] = []

        def groups(self) -> list[Any]:
            return []

        def finish(self, batch: Any, output: Any) -> None:
            self.kept.append(output.logits.clone())

    before = hooks_on(eager.model)
    plain, hooked = Logits(), Logits()
    runner = Runner(eager, batch_size=1)
    attention_kwargs = {"output_attentions": True}
    for keeper, parts in ((plain, []), (hooked, ReportCollectors.of(eager).all())):
        keeper.forward_kwargs = attention_kwargs  # the same forward, hooks or not
        for _ in collect(runner, [TEXT], [*parts, keeper]):
            pass
    assert torch.equal(plain.kept[0], hooked.kept[0])
    assert hooks_on(eager.model) == before


def test_each_part_is_its_own_commands_json(cli_module, report_doc) -> None:
    assert_same(
        report_doc["trace"], cli_module("trace", TEXT, *TINY, "--layer", "all", "-f", "json")
    )
    assert_same(report_doc["sparsity"], report_doc["trace"]["ffn"])
    assert_same(report_doc["params"], cli_module("params", "--model", "tiny", "-f", "json"))
    assert_same(report_doc["outliers"], cli_module("outliers", TEXT, *TINY, "-f", "json"))
    attention = cli_module("attention", TEXT, *TINY, "--layer", "-1", "-f", "json")
    assert_same(report_doc["attention"], attention)
    assert_same(report_doc["lens"], cli_module("lens", TEXT, *TINY, "--top-k", "5", "-f", "json"))
    assert "compare" not in report_doc


def test_an_8bit_report_matches_the_8bit_commands(cli) -> None:
    args = (TEXT, "--model", "tiny", "-q", "8bit", "--no-server")
    doc = json_of(cli, "report", *args, "--layer", "0", "--head", "1")
    assert_same(doc["trace"], json_of(cli, "trace", *args, "--layer", "0"), FLOAT16)
    assert_same(doc["outliers"], json_of(cli, "outliers", *args), FLOAT16)
    assert_same(doc["attention"], json_of(cli, "attention", *args, "--head", "1"), FLOAT16)
    assert doc["outliers"]["modules"][0]["threshold_source"] == "module"


def test_compare_is_the_compare_commands_json(cli) -> None:
    args = (TEXT, *TINY, "--no-server")
    doc = json_of(cli, "report", *args, "--layer", "1", "--compare", "none")
    want = json_of(cli, "compare", *args, "--layer", "1", "--against", "none")
    assert_same(doc["compare"], want)
    assert doc["compare"]["first_exceeding"] is None  # the same setting: no difference


def test_histograms_count_every_element_between_the_outputs_extremes(report_doc) -> None:
    modules = {m["name"]: m for m in report_doc["trace"]["modules"] if m["call"] == 0}
    assert set(report_doc["histograms"]) == set(modules)
    for name, histogram in report_doc["histograms"].items():
        record = modules[name]
        assert len(histogram["counts"]) == 64
        assert sum(histogram["counts"]) == math.prod(record["shape"]), name
        # The range is the statistics' own: the same extremes, read from the same partials.
        assert histogram["lo"] == record["stats"]["min"]
        assert histogram["hi"] == record["stats"]["max"]


def test_histograms_match_torch_histc_in_float64(eager) -> None:
    """Each module's counts against ``torch.histc`` of its output in float64, over the
    same range. An element within float32 rounding of a bin edge may fall on either side:
    the counts may differ by at most two per such element, and by nothing else."""
    outputs: dict[str, torch.Tensor] = {}

    class Keep:
        forward_kwargs = NO_KWARGS

        def __init__(self) -> None:
            names = [n for n, _ in eager.model.named_modules() if n.startswith("model.decoder")]
            keep = lambda _i, name, _c, t: outputs.setdefault(name, t.double())  # noqa: E731
            self.capture = capture(eager.model, names, stats=False, sink=keep)

        def groups(self) -> list[Any]:
            return [self.capture]

        def finish(self, batch: Any, output: Any) -> None:
            pass

    parts = ReportCollectors.of(eager)
    runner = Runner(eager, batch_size=1)
    for _ in collect(runner, [TEXT], [*parts.all(), Keep()]):
        histograms = parts.trace.capture.histograms()
    checked = 0
    for (name, _call), histogram in histograms.items():
        x = outputs[name].reshape(-1)
        lo, hi = histogram.lo, histogram.hi
        assert lo is not None and hi is not None and hi > lo
        want = torch.histc(x, bins=64, min=lo, max=hi).long().tolist()
        position = (x - lo) / (hi - lo) * 64
        near_edge = int(((position - position.round()).abs() < 1e-4).sum())
        diff = sum(abs(a - b) for a, b in zip(histogram.counts, want, strict=True))
        assert diff <= 2 * near_edge, name
        checked += 1
    assert checked > 40


def test_a_padded_batch_bins_only_real_finite_elements() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)
    x[0, 1, 2], x[1, 0, 3] = math.nan, math.inf
    x[1, 3:] = 1000.0  # padding: far outside the real range, and never counted
    valid = torch.ones(2, 5, dtype=torch.bool)
    valid[1, 3:] = False
    row = output_histogram(x, token_partials(x), valid, 16)
    real = x[valid].reshape(-1)
    real = real[torch.isfinite(real)].double()
    lo, hi = float(row[0]), float(row[1])
    assert (lo, hi) == (float(real.min()), float(real.max()))
    assert int(row[2:].sum()) == real.numel()
    want = torch.histc(real, bins=16, min=lo, max=hi)
    assert (row[2:] - want).abs().sum() <= 2  # one element may sit within rounding of an edge


@pytest.mark.parametrize(
    "values",
    [[0.0, 1e-45, 0.0, 1e-45], [-3e38, 3e38, 0.0, 1.0]],
    ids=["range-below-1e-37", "range-above-float32"],
)
def test_ranges_at_the_ends_of_float32_still_put_the_extremes_in_the_end_bins(values) -> None:
    # A range so small that bins/range overflows float32, and one so large that x - lo
    # does: each element still goes to a bin, the minimum to the first, the maximum to
    # the last, and every element is counted.
    x = torch.tensor(values, dtype=torch.float32).reshape(1, 2, 2)
    row = output_histogram(x, token_partials(x), None, 8)
    counts = row[2:].long().tolist()
    assert sum(counts) == len(values)
    assert counts[0] >= values.count(min(values)) and counts[-1] >= values.count(max(values))


def test_series_across_depth_come_from_the_trace_records(eager) -> None:
    result = build_report(eager, TEXT, model="tiny", role="self_attn.q_proj")
    by_name = {m.name: m.stats for m in result.trace.modules}
    layers = tuple(range(eager.num_layers))
    assert result.layer_series.layers == result.role_series.layers == layers
    for i in layers:
        assert result.layer_series.absmax[i] == by_name[layer_root(i)].absmax
        q = by_name[f"{layer_root(i)}.self_attn.q_proj"]
        assert (result.role_series.mean[i], result.role_series.std[i]) == (q.mean, q.std)
    assert depth_series(result.trace, "nothing").layers == ()


def test_out_writes_the_stdout_document_atomically(cli, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    written = cli("report", "Hello", *TINY, "--out", str(out))
    assert written.code == 0 and written.out == ""
    assert written.err == f"wrote {out}\n"
    assert json.loads(out.read_text()) == json_of(cli, "report", "Hello", *TINY)
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left
    assert_error(
        cli("report", "Hello", *TINY, "--out", str(out)),
        2,
        f"{out} exists: use --force to overwrite it",
    )
    assert cli("report", "Hello", *TINY, "--out", str(out), "--force").code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--force"], "--force only applies with --out"),
        (["--role", "fc9"], "--role fc9 is no module of a decoder layer: choose from "),
        (["--attention-layer", "7"], "layer 7 does not exist: the model has layers 0-3"),
        (["--head", "9"], "head 9 does not exist: the model has heads 0-3"),
        (["--top-k", "0"], "--top-k must be at least 1, not 0"),
        (["--out", "report.txt"], "--out writes HTML or JSON: give a file name ending in "),
        (["--out", "r.txt", "-f", "html"], "--out writes HTML: give a file name ending in .html"),
    ],
    ids=["force", "role", "attention-layer", "head", "top-k", "suffix", "html-suffix"],
)
def test_bad_options_are_refused_before_any_pass(cli, no_load, args, message) -> None:
    result = cli("report", "Hello", *TINY, *args)
    assert result.code == 2 and result.err.startswith(f"Error: {message}"), result.err


def test_a_report_is_about_one_text(cli) -> None:
    result = cli("report", *TINY, "--file", "sentences.txt")
    assert result.code == 2 and "--file" in result.err


def test_a_reducer_that_fails_leaves_no_hook(eager) -> None:
    """``collect`` holds every collector's groups in one block: a failure in any reducer
    removes them all."""

    class Fails:
        forward_kwargs = NO_KWARGS

        def groups(self) -> list[Any]:
            return []

        def finish(self, batch: Any, output: Any) -> None:
            raise RuntimeError("reducer failed")

    before = hooks_on(eager.model)
    parts = ReportCollectors.of(eager)
    with pytest.raises(RuntimeError, match="reducer failed"):
        for _ in collect(Runner(eager), [TEXT], [*parts.all(), Fails()]):
            pass
    assert hooks_on(eager.model) == before


def test_an_html_out_is_the_page_of_every_part_with_the_json_embedded(cli, tmp_path) -> None:
    from html_pages import HOSTILE, assert_self_contained, same_json

    out = tmp_path / "report.html"
    written = cli("report", HOSTILE, *TINY, "--out", str(out))
    assert (written.code, written.out, written.err) == (0, "", f"wrote {out}\n")
    page = assert_self_contained(out.read_text(encoding="utf-8"))
    assert same_json(page.records(), json_of(cli, "report", HOSTILE, *TINY))
    assert HOSTILE in page.all_text() and not any(tag == "b" for tag, _ in page.tags)
    # Each analysis draws its own part: the modules, the lens grid, the heads, the params.
    modules = page.records()["trace"]["modules"]
    assert page.table("modules")["rows"] and len(page.table("modules")["rows"]) >= len(modules)
    for name in ("tokens", "lens", "sparsity", "histograms"):
        assert page.table(name), name
    assert sum(tag == "svg" for tag, _ in page.tags) >= 3  # two depth charts, attention
    # --format html without --out: the same page on stdout.
    stdout = cli("report", HOSTILE, *TINY, "--format", "html")
    assert stdout.code == 0 and stdout.out == out.read_text(encoding="utf-8")


def test_head_maps_hold_every_layer_and_agree_with_the_attention_part(report_doc) -> None:
    maps, attention = report_doc["heads"], report_doc["attention"]
    assert len(maps["entropy"]) == len(maps["sink"]) == 4  # tiny's layers
    assert all(len(row) == attention["num_heads"] for row in maps["entropy"] + maps["sink"])
    layer = attention["layer"]
    for head in attention["heads"]:  # the attention part's layer is one row of the maps
        assert maps["entropy"][layer][head["head"]] == pytest.approx(head["entropy"], rel=1e-6)
        assert maps["sink"][layer][head["head"]] == pytest.approx(head["sink"], rel=1e-6)
    assert maps["uniform_entropy"] == attention["uniform_entropy"]
    # An entropy lies between a head on one key and an even spread over every key seen.
    assert all(0 <= e <= maps["uniform_entropy"] + 1e-6 for row in maps["entropy"] for e in row)


def test_a_truncated_text_is_said_once_with_compare(cli) -> None:
    # Two passes read the text (the reference's, then the report's): one note.
    long = " ".join(["word"] * 200)
    result = cli("report", long, *TINY, "--truncate", "--compare", "none", "-f", "json")
    assert result.code == 0, result.err
    assert result.err.count("--truncate kept the first") == 1, result.err

"""Golden tables of every command, at 80 and at 200 columns, and what must hold at every
width from 80 to 120: no line too wide, no number cut, a title on every block, the main
columns in the first block.

Tables that print floats are rendered from hand-built records with fixed
values, not from a forward pass: the last digit of a real forward depends on
the CPU's kernels (Intel and AMD round differently), and a golden file must
pass on any machine. The trace statistics were copied from a real run on the
tiny model and the other values are made up in the same ranges, so the column
widths are realistic. The tree shows only exact counts and shapes, so it runs
through the real CLI. Every test that uses the ``golden`` fixture lives here.

After an intended change: pytest tests/test_golden.py --update-golden, then
read the diff of tests/golden/ before committing it.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Callable

import pytest
from rich.console import Console

from conftest import NUMBER, sample_result
from conftest import render_params_text as _render
from optinspect.analyses.params import LoadedCount, count_params, inventory_params
from optinspect.render.attention import render_attention
from optinspect.render.calibrate import render_calibration
from optinspect.render.compare import render_compare
from optinspect.render.lens import render_lens
from optinspect.render.outliers import render_outliers
from optinspect.render.params import render_params
from optinspect.render.terminal import plain_console, write_terminal
from optinspect.render.trace import render_trace, sparsity_page
from optinspect.results.attention import AttentionResult, HeadSummary
from optinspect.results.calibration import (
    CalibrationResult,
    CalibrationSettings,
    LinearInput,
    ModuleOutput,
)
from optinspect.results.compare import CompareResult, ModuleDiff, Setting
from optinspect.results.lens import LensLayer, LensResult, Prediction
from optinspect.results.outliers import DimCount, ModuleOutliers, OutlierResult, RecurringDim
from optinspect.results.records import ModelInfo, ModuleRecord, TensorStats, Token
from optinspect.results.sparsity import LayerSparsity
from optinspect.results.trace import TraceResult

#: A narrow terminal and the width piped output gets.
WIDTHS = (80, 200)
width_param = pytest.mark.parametrize("width", WIDTHS)


def rendered(width: int, draw: Callable[[Console], None]) -> str:
    """What ``draw`` prints on a colourless console ``width`` cells wide, exactly."""
    buffer = io.StringIO()
    # FORCE_COLOR or TTY_* in the environment must not change it.
    draw(plain_console(buffer, width))
    return buffer.getvalue()


def tokens(*pairs: tuple[int, str]) -> tuple[Token, ...]:
    return tuple(Token(id_, text) for id_, text in pairs)


#: "Hello world, this is" through the tiny tokenizer.
HELLO = tokens(
    (2, "</s>"),
    (347, "Hel"),
    (313, "lo"),
    (467, " world"),
    (15, ","),
    (260, " t"),
    (75, "h"),
    (368, "is"),
    (331, " is"),
)

# -- trace ---------------------------------------------------------------------------

#: name, type, depth, shape, weight dtype, (mean, std, min, max, absmax, rms, zeros).
OVERVIEW = [
    ("model.decoder.embed_tokens", "Embedding", 0, (1, 9, 64), "float32",
     (-0.0001345, 0.0189, -0.05539, 0.04758, 0.05539, 0.0189, 0.0)),
    ("model.decoder.embed_positions", "OPTLearnedPositionalEmbedding", 0, (1, 9, 64), "float32",
     (-0.00231, 0.01987, -0.05853, 0.06058, 0.06058, 0.02, 0.0)),
    ("model.decoder.layers.0", "OPTDecoderLayer", 0, (1, 9, 64), None,
     (0.003432, 0.05761, -0.1478, 0.1973, 0.1973, 0.05771, 0.0)),
    ("model.decoder.layers.1", "OPTDecoderLayer", 0, (1, 9, 64), None,
     (0.01114, 0.07763, -0.2152, 0.2342, 0.2342, 0.07843, 0.0)),
    ("model.decoder.layers.2", "OPTDecoderLayer", 0, (1, 9, 64), None,
     (0.02232, 0.09197, -0.221, 0.3059, 0.3059, 0.09464, 0.0)),
    ("model.decoder.layers.3", "OPTDecoderLayer", 0, (1, 9, 64), None,
     (0.02688, 0.09683, -0.2794, 0.3268, 0.3268, 0.1005, 0.0)),
    ("model.decoder.final_layer_norm", "LayerNorm", 0, (1, 9, 64), "float32",
     (-0.008994, 0.9947, -3.282, 3.154, 3.282, 0.9947, 0.0)),
    ("lm_head", "Linear", 0, (1, 9, 512), "float32",
     (-0.001656, 0.1602, -0.5353, 0.6062, 0.6062, 0.1602, 0.0)),
]  # fmt: skip

#: ``trace --layer 0`` on the first four tokens of HELLO.
LAYER0 = [
    ("model.decoder.layers.0", "OPTDecoderLayer", 0, (1, 4, 64), None,
     (0.002563, 0.05982, -0.1478, 0.1973, 0.1973, 0.05987, 0.0)),
    ("model.decoder.layers.0.self_attn_layer_norm", "LayerNorm", 1, (1, 4, 64), "float32",
     (0.0005142, 0.9995, -2.672, 2.557, 2.672, 0.9995, 0.0)),
    ("model.decoder.layers.0.self_attn", "OPTAttention", 1, (1, 4, 64), None,
     (0.0007376, 0.026, -0.06457, 0.08639, 0.08639, 0.02601, 0.0)),
    ("model.decoder.layers.0.self_attn.q_proj", "Linear", 2, (1, 4, 64), "float32",
     (0.00727, 0.1721, -0.4274, 0.5198, 0.5198, 0.1723, 0.0)),
    ("model.decoder.layers.0.self_attn.k_proj", "Linear", 2, (1, 4, 64), "float32",
     (-0.002014, 0.144, -0.3353, 0.4521, 0.4521, 0.144, 0.0)),
    ("model.decoder.layers.0.self_attn.v_proj", "Linear", 2, (1, 4, 64), "float32",
     (0.001033, 0.1541, -0.3892, 0.4614, 0.4614, 0.1541, 0.0)),
    ("model.decoder.layers.0.self_attn.out_proj", "Linear", 2, (1, 4, 64), "float32",
     (0.0007376, 0.026, -0.06457, 0.08639, 0.08639, 0.02601, 0.0)),
    ("model.decoder.layers.0.final_layer_norm", "LayerNorm", 1, (4, 64), "float32",
     (0.001214, 1.024, -2.499, 3.187, 3.187, 1.024, 0.0)),
    ("model.decoder.layers.0.fc1", "Linear", 1, (4, 256), "float32",
     (0.01122, 0.1643, -0.5348, 0.4702, 0.5348, 0.1646, 0.0)),
    ("model.decoder.layers.0.activation_fn", "ReLU", 1, (4, 256), None,
     (0.07235, 0.09907, 0.0, 0.4702, 0.4702, 0.1227, 0.4766)),
    ("model.decoder.layers.0.fc2", "Linear", 1, (4, 64), "float32",
     (0.004616, 0.04328, -0.1005, 0.1354, 0.1354, 0.04353, 0.0)),
]  # fmt: skip


def trace_result(rows: list, toks: tuple[Token, ...]) -> TraceResult:
    modules = []
    for index, (name, type_, depth, shape, weight, values) in enumerate(rows):
        layer = int(name.split(".")[3]) if ".layers." in name else None
        modules.append(
            ModuleRecord(
                index=index,
                name=name,
                type=type_,
                layer=layer,
                call=0,
                depth=depth,
                output="tensor",
                shape=shape,
                dtype="float32",
                device="cpu",
                weight_dtype=weight,
                weight_shape=None,  # the table does not show it
                stats=TensorStats(*values, nan=0, inf=0),
            )
        )
    return TraceResult(
        info=ModelInfo("tiny", "none", "cpu", "float32", random_weights=True),
        text="".join(t.text for t in toks[1:]),
        tokens=toks,
        modules=tuple(modules),
    )


@width_param
def test_trace_overview(golden, width: int) -> None:
    result = trace_result(OVERVIEW, HELLO)
    golden(f"trace_overview_{width}.txt", rendered(width, lambda c: render_trace(c, result)))


@width_param
def test_trace_layer0(golden, width: int) -> None:
    result = trace_result(LAYER0, HELLO[:4])
    golden(f"trace_layer0_{width}.txt", rendered(width, lambda c: render_trace(c, result)))


@width_param
@pytest.mark.parametrize("many", [False, True], ids=["one", "many"])
def test_trace_sparsity(golden, width: int, many: bool) -> None:
    # With several sentences (--file) the table adds the units that never fired.
    rows = [
        LayerSparsity(layer=0, zeros=0.4809, dead=3, units=256, tokens=9),
        LayerSparsity(layer=1, zeros=0.4692, dead=0, units=256, tokens=9),
        LayerSparsity(layer=2, zeros=0.5139, dead=12, units=256, tokens=9),
        LayerSparsity(layer=3, zeros=0.4935, dead=1, units=256, tokens=9),
    ]
    text = rendered(width, lambda c: write_terminal(c, sparsity_page(rows, many), header=False))
    golden(f"trace_sparsity_{'many' if many else 'one'}_{width}.txt", text)


# -- lens ----------------------------------------------------------------------------


#: Made-up token ids for the lens: a prediction's id is its index here.
VOCAB = ["\n", "Hel", "lo", " fox", ",", "X", "antiz", " is", "I", "ou", "iz", "ngu", "at",
         " the", " world", " t", " river", " s", " brown", "yer"]  # fmt: skip


def ranked(*cells: tuple[int, str, float]) -> tuple[Prediction, ...]:
    return tuple(Prediction(id_, text, prob) for id_, text, prob in cells)


def lens_result(toks: tuple[Token, ...], top_k: int, layers: list, output: list) -> LensResult:
    return LensResult(
        info=ModelInfo("tiny", "none", "cpu", "float32", random_weights=True),
        text="".join(t.text for t in toks[1:]),
        tokens=toks,
        top_k=top_k,
        layers=tuple(LensLayer(i, tuple(p)) for i, p in enumerate(layers)),
        output=tuple(output),
    )


def lens_top1() -> LensResult:
    # Each column: the top-1 token per position after that layer (probabilities unshown).
    columns = [
        ["\n", "Hel", "lo", " fox", ",", "X", "antiz", " is", " is"],
        ["I", "Hel", "ou", "iz", ",", "X", "ngu", "at", "iz"],
        ["I", "I", " the", "iz", " world", " t", " river", "at", "iz"],
        ["I", "I", " the", " s", " world", " t", "ngu", " is", "ngu"],
    ]
    layers = [[ranked((VOCAB.index(text), text, 0.0032)) for text in c] for c in columns]
    # The model's own output is the last layer's: those cells get the '*' mark.
    output = [ranked((VOCAB.index(text), text, 0.0035)) for text in columns[-1]]
    return lens_result(HELLO, 1, layers, output)


def lens_top3() -> LensResult:
    # top-k > 1 prints probabilities and rules between rows; at 80 columns the layers
    # no longer fit beside each other and go to a second table.
    candidates = [
        [("\n", 0.00292), ("X", 0.00284), (" brown", 0.00282)],
        [("Hel", 0.00341), ("ngu", 0.00293), ("iz", 0.00291)],
        [("lo", 0.00309), ("yer", 0.003), ("ou", 0.0029)],
        [("ou", 0.00293), (" world", 0.00292), ("iz", 0.00291)],
    ]

    def at(pos: int, layer: int) -> tuple[Prediction, ...]:
        # Each layer rotates the candidates so the columns differ; the last layer's
        # order is the model's own output, as in a real lens.
        shift = layer % 3
        rows = candidates[pos][shift:] + candidates[pos][:shift]
        return ranked(*((VOCAB.index(text), text, prob) for text, prob in rows))

    layers = [[at(pos, layer) for pos in range(4)] for layer in range(4)]
    return lens_result(HELLO[:4], 3, layers, [at(pos, 3) for pos in range(4)])


# -- attention -----------------------------------------------------------------------

#: "The quick brown fox jumps over the lazy dog while the cat sleeps": 19 tokens,
#: too many for one heatmap block at 80 columns.
FOX = tokens(
    (2, "</s>"),
    (277, "The"),
    (494, " quick"),
    (506, " brown"),
    (452, " fox"),
    (492, " jumps"),
    (428, " over"),
    (263, " the"),
    (335, " lazy"),
    (337, " dog"),
    (265, " w"),
    (75, "h"),
    (76, "i"),
    (79, "l"),
    (72, "e"),
    (263, " the"),
    (292, " c"),
    (284, "at"),
    (502, " sleeps"),
)


def causal_weights(size: int) -> tuple[tuple[float, ...], ...]:
    """A causal matrix in whole percents, so no cell sits on a rounding edge.

    Each key of row i gets 100 // (i + 1) percent; key 0 (the sink) also gets the rest.
    """
    rows = []
    for query in range(size):
        share = 100 // (query + 1)
        row = [share / 100] * (query + 1)
        row[0] = (100 - share * query) / 100
        rows.append(tuple(row))
    return tuple(rows)


def attention_result() -> AttentionResult:
    return AttentionResult(
        info=ModelInfo("tiny", "none", "cpu", "float32", random_weights=True),
        text="The quick brown fox jumps over the lazy dog while the cat sleeps",
        tokens=FOX,
        layer=3,
        head=1,
        num_heads=4,
        weights=causal_weights(len(FOX)),
        heads=(
            HeadSummary(0, 2.071, 0.314),
            HeadSummary(1, 1.962, 0.353),
            HeadSummary(2, 2.058, 0.312),
            HeadSummary(3, 0.847, 0.702),
        ),
        uniform_entropy=2.0705,
    )


# -- compare -------------------------------------------------------------------------


def compare_result() -> CompareResult:
    # ``compare --layer 0 --quant 4bit --against none``: fc1 finishes first above the
    # tolerance (FIRST); the ReLU, fc2 and the layer that holds them are over it too.
    rows = [
        # name under layers.0, type, depth, shape, finished, cosine, rel err, max abs diff
        ("", "OPTDecoderLayer", 0, (1, 4, 64), 10, 0.998412, 0.05634, 0.01217),
        (".self_attn_layer_norm", "LayerNorm", 1, (1, 4, 64), 0, 0.999871, 0.01604, 0.04417),
        (".self_attn", "OPTAttention", 1, (1, 4, 64), 5, 0.999102, 0.04239, 0.003131),
        (".self_attn.q_proj", "Linear4bit", 2, (1, 4, 64), 1, 0.998957, 0.04571, 0.02374),
        (".self_attn.k_proj", "Linear4bit", 2, (1, 4, 64), 2, 0.998733, 0.04912, 0.02795),
        (".self_attn.v_proj", "Linear4bit", 2, (1, 4, 64), 3, 0.998851, 0.04733, 0.02633),
        (".self_attn.out_proj", "Linear4bit", 2, (1, 4, 64), 4, 0.999102, 0.04239, 0.003131),
        (".final_layer_norm", "LayerNorm", 1, (4, 64), 6, 0.999834, 0.01822, 0.1839),
        (".fc1", "Linear4bit", 1, (4, 256), 7, 0.998011, 0.06311, 0.03687),
        (".activation_fn", "ReLU", 1, (4, 256), 8, 0.996925, 0.07845, 0.03687),
        (".fc2", "Linear4bit", 1, (4, 64), 9, 0.993688, 0.1123, 0.007758),
    ]
    modules = tuple(
        ModuleDiff(
            index=index,
            name="model.decoder.layers.0" + suffix,
            type=type_,
            reference_type="Linear" if type_ == "Linear4bit" else type_,
            layer=0,
            call=0,
            depth=depth,
            finished=finished,
            shape=shape,
            status="compared",
            cosine=cosine,
            rel_error=rel,
            max_abs_diff=diff,
            exceeds=rel > 0.05,
        )
        for index, (suffix, type_, depth, shape, finished, cosine, rel, diff) in enumerate(rows)
    )
    return CompareResult(
        info=ModelInfo("tiny", "8bit", "cuda:0", "float16", random_weights=True),
        text="Hello world",
        tokens=HELLO[:4],
        setting=Setting("4bit", "float16"),
        reference=Setting("none", "float32"),
        tolerance=0.05,
        modules=modules,
    )


# -- outliers ------------------------------------------------------------------------

#: Per layer and projection input: tokens hit (of 13), absmax, and (dim, tokens, absmax)
#: of each dimension that reached 6.0; q, k and v read the same input.
OUTLIER_INPUTS = {
    "attn": [
        (13, 9.812, [(17, 13, 9.812), (5, 11, 7.204), (52, 9, 6.633)]),
        (13, 11.27, [(17, 13, 11.27), (5, 12, 8.017), (52, 10, 7.13), (31, 2, 6.02)]),
        (12, 12.94, [(17, 12, 12.94), (5, 12, 8.5), (52, 11, 7.7), (31, 4, 6.4), (8, 1, 6.1),
                     (40, 1, 6.05), (44, 1, 6.01)]),
        (13, 14.6, [(17, 13, 14.6), (5, 13, 9.0), (52, 12, 8.2), (31, 6, 6.9)]),
    ],
    "out_proj": [(0, 0.4507, []), (0, 0.3285, []), (0, 0.3481, []), (1, 6.118, [(9, 1, 6.118)])],
    "fc1": [
        (13, 9.455, [(17, 13, 9.455), (5, 10, 7.03)]),
        (13, 10.9, [(17, 13, 10.9), (5, 12, 7.8), (52, 8, 6.5)]),
        (13, 12.3, [(17, 13, 12.3), (5, 12, 8.4), (52, 10, 7.2), (31, 3, 6.2)]),
        (13, 13.8, [(17, 13, 13.8), (5, 13, 8.8), (52, 11, 7.9), (31, 5, 6.6)]),
    ],
    "fc2": [(0, 3.976, []), (2, 6.743, [(51, 1, 6.743), (163, 1, 6.2)]), (0, 4.52, []),
            (0, 5.018, [])],
}  # fmt: skip

PROJECTIONS = (
    ("self_attn.q_proj", "attn", 64),
    ("self_attn.k_proj", "attn", 64),
    ("self_attn.v_proj", "attn", 64),
    ("self_attn.out_proj", "out_proj", 64),
    ("fc1", "fc1", 64),
    ("fc2", "fc2", 256),
)


def outlier_result() -> OutlierResult:
    modules = []
    for layer in range(4):
        for proj, key, in_features in PROJECTIONS:
            hit, absmax, dims = OUTLIER_INPUTS[key][layer]
            modules.append(
                ModuleOutliers(
                    name=f"model.decoder.layers.{layer}.{proj}",
                    type="Linear8bitLt",
                    layer=layer,
                    in_features=in_features,
                    threshold=6.0,
                    threshold_source="module",
                    summary=proj != "fc2",
                    tokens=13,
                    tokens_affected=hit,
                    absmax=absmax,
                    dims=tuple(DimCount(d, n, n / 13, a) for d, n, a in dims),
                )
            )
    return OutlierResult(
        info=ModelInfo("tiny", "8bit", "cuda:0", "float16", random_weights=True),
        threshold=6.0,
        num_layers=4,
        sentences=1,
        tokens=13,
        modules=tuple(modules),
        recurring=(
            RecurringDim(5, (0, 1, 2, 3), 1.0, 0.8462, 9.0),
            RecurringDim(17, (0, 1, 2, 3), 1.0, 0.9808, 14.6),
            RecurringDim(52, (0, 1, 2, 3), 1.0, 0.7115, 8.2),
            RecurringDim(31, (1, 2, 3), 0.75, 0.2885, 6.9),
        ),
    )


# -- tree (real CLI: counts and shapes only, nothing rounded) ------------------------


@width_param
@pytest.mark.parametrize("collapse", [True, False], ids=["collapse", "no_collapse"])
def test_tree(golden, cli, monkeypatch: pytest.MonkeyPatch, width: int, collapse: bool) -> None:
    # The CLI's console takes its width from COLUMNS, as in a real terminal; a
    # FORCE_COLOR or TTY_COMPATIBLE set by a CI runner would add colour codes.
    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    result = cli("tree", "--model", "tiny", "--collapse" if collapse else "--no-collapse")
    assert result.code == 0, result.err
    name = "tree_tiny" if collapse else "tree_tiny_no_collapse"
    golden(f"{name}_{width}.txt", result.out)


# -- calibrate -----------------------------------------------------------------------

#: A run over 3 sentences of the tiny model: name, in_features, max |x|, its channel,
#: median channel max, outlier ratio, p99.9; the worst ratios and a few others.
CALIBRATE_INPUTS = [
    ("model.decoder.layers.2.fc2", 256, 0.5365, 189, 0.1237, 4.338, 0.4453),
    ("model.decoder.layers.3.fc2", 256, 0.4961, 230, 0.1326, 3.743, 0.4766),
    ("model.decoder.layers.0.self_attn.out_proj", 64, 0.4507, 20, 0.1471, 3.063, 0.4453),
    ("model.decoder.layers.2.fc1", 64, 3.97, 17, 1.33, 2.985, 3.812),
    ("lm_head", 64, 3.154, 52, 1.38, 2.285, 3.062),
    ("model.decoder.layers.3.self_attn.q_proj", 64, 3.014, 5, 1.375, 2.192, 3.014),
    ("model.decoder.layers.0.self_attn.k_proj", 64, 3.437, 8, 2.007, 1.713, 3.188),
]
#: Layer outputs: mean, std, min, max, absmax, rms, zeros.
CALIBRATE_OUTPUTS = [
    (0, (0.003546, 0.05913, -0.1646, 0.1973, 0.1973, 0.05924, 0.0)),
    (1, (0.01206, 0.07972, -0.2169, 0.2437, 0.2437, 0.08063, 0.0)),
    (2, (0.02284, 0.09441, -0.2801, 0.3236, 0.3236, 0.09713, 0.0)),
    (3, (0.02706, 0.09917, -0.2536, 0.3107, 0.3107, 0.1028, 0.0)),
]


def calibration_result() -> CalibrationResult:
    inputs = tuple(
        LinearInput(
            name=name,
            type="Linear",
            layer=int(name.split(".")[3]) if ".layers." in name else None,
            in_features=in_features,
            tokens=20,
            absmax=absmax,
            argmax=argmax,
            median=median,
            outlier_ratio=ratio,
            mean_abs=median / 4,
            percentiles={"p99": p999 * 0.9, "p99.9": p999, "p99.99": absmax},
        )
        for name, in_features, absmax, argmax, median, ratio, p999 in CALIBRATE_INPUTS
    )
    outputs = tuple(
        ModuleOutput(
            f"model.decoder.layers.{layer}", "OPTDecoderLayer", layer, TensorStats(*v, 0, 0)
        )
        for layer, v in CALIBRATE_OUTPUTS
    )
    return CalibrationResult(
        info=ModelInfo("tiny", "none", "cpu", "float32", random_weights=True),
        settings=CalibrationSettings(file="s.txt"),
        samples=3,
        tokens=20,
        world_size=1,
        inputs=inputs,
        outputs=outputs,
    )


# -- every table, at every width from 80 to 120 ------------------------------------------


def filtered_trace() -> TraceResult:
    """``trace --filter '*.self_attn.*'``: full dotted names, no layer row above them."""
    rows = [
        (name.replace("layers.0.", f"layers.{layer}.", 1), type_, 0, *rest)
        for layer in range(4)
        for name, type_, _depth, *rest in LAYER0
        if ".self_attn." in name
    ]
    return trace_result(rows, HELLO[:4])


#: What each command prints, drawn from the records above.
DRAWINGS: dict[str, Callable[[Console], None]] = {
    "trace-overview": lambda c: render_trace(c, trace_result(OVERVIEW, HELLO)),
    "trace-layer0": lambda c: render_trace(c, trace_result(LAYER0, HELLO[:4])),
    "trace-filter": lambda c: render_trace(c, filtered_trace()),
    "lens-top1": lambda c: render_lens(c, lens_top1()),
    "lens-top3": lambda c: render_lens(c, lens_top3()),
    "compare": lambda c: render_compare(c, compare_result()),
    "outliers": lambda c: render_outliers(c, outlier_result()),
    "calibrate": lambda c: render_calibration(c, calibration_result()),
    "params-module": lambda c: render_params(
        c, count_params(inventory_params("facebook/opt-125m"), by="module")
    ),
}


#: The drawings above with a golden file each (the trace ones have their own tests).
GOLDEN = {
    "lens_top1": DRAWINGS["lens-top1"],
    "lens_top3": DRAWINGS["lens-top3"],
    "compare": DRAWINGS["compare"],
    "outliers": DRAWINGS["outliers"],
    "calibrate": DRAWINGS["calibrate"],
    "attention": lambda c: render_attention(c, attention_result()),
}


@width_param
@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_drawing(golden, name: str, width: int) -> None:
    golden(f"{name}_{width}.txt", rendered(width, GOLDEN[name]))


@pytest.mark.parametrize("name", list(DRAWINGS))
def test_no_line_is_wider_and_no_number_is_cut_from_80_to_120_columns(name: str) -> None:
    # Blocks, wrapped names and wrapped lines move values; they never cut one. Every
    # line fits (header lines and notes included), and the numbers are those at 200.
    numbers = set(NUMBER.findall(rendered(200, DRAWINGS[name])))
    for width in range(80, 121):
        text = rendered(width, DRAWINGS[name])
        too_wide = [line for line in text.splitlines() if len(line) > width]
        assert too_wide == [], f"{width} columns: {too_wide[0]!r}"
        assert "…" not in text
        assert set(NUMBER.findall(text)) == numbers, f"{width} columns"


def blocks(text: str) -> list[list[str]]:
    """The column headers of each block drawn, in order; a header wrapped over several
    lines is joined."""
    out: list[list[str]] = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if not line.startswith("┏"):
            continue
        header: list[str] = []
        for row in lines[number + 1 :]:
            if row.startswith("┡"):
                break
            cells = [cell.strip() for cell in row.strip("┃").split("┃")]
            pairs = zip(header, cells, strict=True) if header else ((c, "") for c in cells)
            header = [" ".join(filter(None, pair)) for pair in pairs]
        out.append(header)
    return out


def test_first_blocks_hold_the_name_the_sort_key_and_the_main_figures_at_80() -> None:
    # At 80 columns calibrate's sort column (outlier ratio) was in its third block,
    # compare's middle block held only shape and cosine, outliers put absmax alone in
    # a block, and a --filter table with full dotted names took 5 blocks.
    calibrate = blocks(rendered(80, DRAWINGS["calibrate"]))
    assert calibrate[0] == ["module", "ratio", "max |x|", "channel"]
    assert calibrate[1] == ["module", "median max", "p99.9 |x|", "in"]
    assert calibrate[2][:2] == ["layer output", "absmax"]  # sorted by it
    compare = blocks(rendered(80, DRAWINGS["compare"]))
    assert compare == [
        ["module", "#", "rel err", "cosine", "max abs diff", "mark"],
        ["module", "type", "shape"],
    ]
    outliers = blocks(rendered(80, DRAWINGS["outliers"]))
    assert outliers[0] == ["module", "tokens hit", "fraction", "absmax",
                           "dimensions (most tokens first)"]  # fmt: skip
    assert outliers[1] == ["module", "type", "in", "threshold"]
    modules = [b for b in blocks(rendered(80, DRAWINGS["trace-filter"])) if b[0] == "module"]
    assert modules == [
        ["module", "#", "type", "shape", "dtype"],
        ["module", "weight", "mean", "std", "absmax", "zeros"],
    ]


@pytest.mark.parametrize("name", ["trace-overview", "calibrate"])
def test_zeros_are_a_percentage_in_every_table(name: str) -> None:
    # calibrate showed the zero fraction as 0 where trace shows 0.0%.
    text = rendered(200, DRAWINGS[name])
    header = next(line for line in text.splitlines() if "┃ zeros ┃" in line)
    column = [cell.strip() for cell in header.split("┃")].index("zeros")
    cells = [
        [cell.strip() for cell in line.split("│")][column]
        for line in text.splitlines()
        if line.startswith("│") and len(line.split("│")) == len(header.split("┃"))
    ]
    assert cells and all(re.fullmatch(r"\d+\.\d%", cell) for cell in cells), cells


@pytest.mark.parametrize("name", list(DRAWINGS))
def test_every_block_has_a_title_and_a_continued_one_says_so(name: str) -> None:
    # A lens table split at 80 columns went on with no title at all.
    for width in (80, 100, 120):
        lines = rendered(width, DRAWINGS[name]).splitlines()
        titles = [lines[n - 1] for n, line in enumerate(lines) if line.startswith("┏")]
        assert all(title and title[0] not in "┏┃┡│├└" for title in titles), titles
        for before, title in itertools.pairwise(titles):
            if title.endswith(", continued"):
                assert title.removesuffix(", continued") == before.removesuffix(", continued")


@pytest.mark.parametrize("name", list(DRAWINGS))
def test_the_lines_above_the_tables_fit_80_columns_unbroken(name: str) -> None:
    # params' header and outliers' threshold line wrapped mid-phrase at 80 columns.
    def prelude(width: int) -> list[str]:
        lines = rendered(width, DRAWINGS[name]).splitlines()
        first = next(n for n, line in enumerate(lines) if line.startswith("┏"))
        return lines[: first - 1]  # up to the first table's title

    assert prelude(80) == prelude(200)
    assert all(len(line) <= 80 for line in prelude(80))


def test_attention_heatmap_goes_on_under_a_continued_title_and_sink_is_a_percentage() -> None:
    # Weights are percentages in the heatmap; the sink (a mean weight) was 0.353 beside them.
    lines = rendered(80, lambda c: render_attention(c, attention_result())).splitlines()
    headers = [n for n, line in enumerate(lines) if line.startswith("query")]
    assert len(headers) == 2  # 19 keys do not fit 80 columns
    assert lines[headers[1] - 1] == "attention of layer 3, head 1, continued"
    head_1 = next(line for line in lines if line.startswith("│   1* "))
    assert [cell.strip() for cell in head_1.split("│")][1:-1] == ["1*", "1.962", "35.3%"]


# --- the trace table of conftest's sample_result ------------------------------------------


def render(result: TraceResult) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=160, color_system=None, force_terminal=False)
    render_trace(console, result)
    return buffer.getvalue()


def test_trace_table_golden(golden) -> None:
    golden("trace_table.txt", render(sample_result()))


def test_dry_run_table_golden(golden) -> None:
    golden("trace_dry_run.txt", render(sample_result(dry_run=True)))


# --- params tables from the family's configs ----------------------------------------------


@pytest.mark.parametrize(
    ("name", "model", "by", "loaded"),
    [
        ("params_opt350m_group.txt", "facebook/opt-350m", "group", None),
        ("params_opt125m_type.txt", "facebook/opt-125m", "type", None),
        (
            "params_opt125m_loaded.txt",
            "facebook/opt-125m",
            "group",
            LoadedCount("4bit", "cuda:0", "float16", 125_239_296, 82_771_968, 128_389_632),
        ),
    ],
)
def test_golden_tables(golden, name: str, model: str, by: str, loaded) -> None:
    golden(name, _render(inventory_params(model), by, loaded))

"""Golden tables of every command, at 80 and at 200 columns.

Tables that print floats are rendered from hand-built records with fixed
values, not from a forward pass: the last digit of a real forward depends on
the CPU's kernels (Intel and AMD round differently), and a golden file must
pass on any machine. The trace statistics were copied from a real run on the
tiny model and the other values are made up in the same ranges, so the column
widths are realistic. The tree shows only exact counts and shapes, so it runs
through the real CLI. Params' goldens live in test_params.py.

After an intended change: pytest tests/test_golden.py --update-golden, then
read the diff of tests/golden/ before committing it.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from rich.console import Console

from optinspect.engine.records import ModelInfo, ModuleRecord, TensorStats, Token
from optinspect.render.attention import render_attention
from optinspect.render.compare import render_compare
from optinspect.render.lens import render_lens
from optinspect.render.outliers import render_outliers
from optinspect.render.trace import render_trace, sparsity_tables
from optinspect.results.attention import AttentionResult, HeadSummary
from optinspect.results.compare import CompareResult, ModuleDiff, Setting
from optinspect.results.lens import LensLayer, LensResult, Prediction
from optinspect.results.outliers import DimCount, ModuleOutliers, OutlierResult, RecurringDim
from optinspect.results.sparsity import LayerSparsity
from optinspect.results.trace import TraceResult

#: A narrow terminal and the width piped output gets.
WIDTHS = (80, 200)
width_param = pytest.mark.parametrize("width", WIDTHS)


def rendered(width: int, draw: Callable[[Console], None]) -> str:
    """What ``draw`` prints on a colourless console ``width`` cells wide, exactly."""
    buffer = io.StringIO()
    # force_terminal=False: FORCE_COLOR or TTY_* in the environment must not change it.
    console = Console(
        file=buffer,
        width=width,
        color_system=None,
        force_terminal=False,
        legacy_windows=False,
    )
    draw(console)
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
    text = rendered(width, lambda c: c.print(*sparsity_tables(rows, many, width)))
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


@width_param
def test_lens_top1(golden, width: int) -> None:
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
    result = lens_result(HELLO, 1, layers, output)
    golden(f"lens_top1_{width}.txt", rendered(width, lambda c: render_lens(c, result)))


@width_param
def test_lens_top3(golden, width: int) -> None:
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
    result = lens_result(HELLO[:4], 3, layers, [at(pos, 3) for pos in range(4)])
    golden(f"lens_top3_{width}.txt", rendered(width, lambda c: render_lens(c, result)))


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


@width_param
def test_attention(golden, width: int) -> None:
    result = AttentionResult(
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
    golden(f"attention_{width}.txt", rendered(width, lambda c: render_attention(c, result)))


# -- compare -------------------------------------------------------------------------


@width_param
def test_compare(golden, width: int) -> None:
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
    result = CompareResult(
        info=ModelInfo("tiny", "8bit", "cuda:0", "float16", random_weights=True),
        text="Hello world",
        tokens=HELLO[:4],
        setting=Setting("4bit", "float16"),
        reference=Setting("none", "float32"),
        tolerance=0.05,
        modules=modules,
    )
    golden(f"compare_{width}.txt", rendered(width, lambda c: render_compare(c, result)))


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


@width_param
def test_outliers(golden, width: int) -> None:
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
    result = OutlierResult(
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
    golden(f"outliers_{width}.txt", rendered(width, lambda c: render_outliers(c, result)))


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

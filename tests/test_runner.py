"""engine/runner.py: texts -> right-padded batches -> one forward, with hook groups told first."""

from __future__ import annotations

import json

import pytest
import torch

import optinspect.engine.runner as runner_module
from optinspect.analyses.trace import iter_trace
from optinspect.engine.batch import Batch
from optinspect.engine.hooks import HookGroup
from optinspect.engine.runner import Runner, encode, forward
from optinspect.errors import UsageError
from optinspect.results.records import Token

SENTENCES = ["Hello world", "The quick brown fox jumps over the lazy dog", "The capital of France"]


def tokens(*ids: int) -> list[Token]:
    return [Token(id=i, text=f"<{i}>") for i in ids]


# --- Batch and batching -----------------------------------------------------------------


def test_batch_of_pads_right_with_the_pad_id_and_masks_real_tokens() -> None:
    batch = Batch.of(["a", "bcd"], [tokens(2, 5), tokens(2, 6, 7, 8)], pad_id=1, first=4)
    assert batch.input_ids.tolist() == [[2, 5, 1, 1], [2, 6, 7, 8]]
    assert batch.attention_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch.input_ids.dtype == torch.long and batch.attention_mask.dtype == torch.long
    assert (batch.layout.lengths, batch.layout.tokens, batch.layout.batch) == ((2, 4), 4, 2)
    assert batch.layout.valid is not None
    assert batch.layout.valid.tolist() == [[True, True, False, False], [True, True, True, True]]
    assert batch.padded and batch.real_tokens == 6
    assert (batch.first, batch.size, batch.texts) == (4, 2, ("a", "bcd"))
    assert batch.tokens[1] == tuple(tokens(2, 6, 7, 8))


def test_batch_of_equal_lengths_is_not_padded() -> None:
    # No mask goes to the model then, so a batch of one computes what a plain call does.
    batch = Batch.of(["a", "b"], [tokens(2, 5), tokens(2, 6)], pad_id=1)
    assert not batch.padded and batch.layout.valid is None
    assert batch.attention_mask.tolist() == [[1, 1], [1, 1]]


def test_batched_reads_lazily_in_chunks() -> None:
    chunks = runner_module.batched(iter("abcde"), 2)
    assert list(chunks) == [["a", "b"], ["c", "d"], ["e"]]
    assert list(runner_module.batched([], 3)) == []


def test_runner_numbers_sentences_across_batches(load_tiny) -> None:
    runner = Runner(load_tiny("none"), batch_size=2)
    texts = ["one", "two words", "three", "four", "five five five"]
    batches = list(runner.batches(iter(texts)))
    assert [(b.first, b.size) for b in batches] == [(0, 2), (2, 2), (4, 1)]
    assert [t for b in batches for t in b.texts] == texts
    assert runner.sentences == 5
    # Every sentence starts with </s> and the shorter one of a batch is padded with <pad>.
    assert batches[0].input_ids[0].tolist()[-1] == runner.pad_id == 1
    assert all(row[0] == 2 for b in batches for row in b.input_ids.tolist())


def test_runner_refuses_an_empty_sentence_with_its_verb(load_tiny) -> None:
    runner = Runner(load_tiny("none"), verb="compare")
    with pytest.raises(UsageError) as info:
        list(runner.batches(["fine", "   "]))
    assert str(info.value) == "the text is empty: give at least one word to compare"


def test_runner_refuses_batch_size_zero(load_tiny) -> None:
    with pytest.raises(UsageError) as info:
        Runner(load_tiny("none"), batch_size=0)
    assert (str(info.value), info.value.exit_code) == (
        "--batch-size must be at least 1, not 0",
        2,
    )


# --- positions --------------------------------------------------------------------------


def test_too_long_text_names_its_length_and_the_limit(load_tiny) -> None:
    with pytest.raises(UsageError) as info:
        encode(load_tiny("none"), " the" * 150)
    assert str(info.value) == (
        "the text has 151 tokens; tiny accepts at most 128 (or use --truncate)"
    )
    assert info.value.exit_code == 2


def test_truncate_keeps_the_first_max_positions_tokens(load_tiny) -> None:
    loaded = load_tiny("none")
    text = " the" * 100 + " end" * 50
    cut = encode(loaded, text, truncate=True)
    assert len(cut) == loaded.max_positions == 128
    full_ids = loaded.tokenizer(text)["input_ids"]
    assert [t.id for t in cut] == full_ids[:128]
    (batch,) = Runner(loaded, truncate=True).batches([text])
    assert batch.input_ids.shape == (1, 128)


def test_truncate_keeps_the_first_positions(cli) -> None:
    result = cli("trace", " the" * 150, "--model", "tiny", "-q", "none", "-f", "json", "--truncate")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert len(doc["tokens"]) == 128
    assert doc["modules"][-1]["shape"] == [1, 128, 512]


# --- forward ----------------------------------------------------------------------------


class Recorder(HookGroup):
    def __init__(self, name: str, events: list) -> None:
        super().__init__()
        self.name = name
        self.events = events

    def _register(self) -> None:
        pass

    def begin(self, batch: Batch) -> None:
        self.events.append((self.name, batch))


def test_forward_tells_every_group_its_batch_before_the_model_runs(load_tiny) -> None:
    loaded = load_tiny("none")
    events: list = []
    handle = loaded.model.register_forward_pre_hook(lambda *a: events.append(("model", None)))
    (batch,) = Runner(loaded, batch_size=2).batches(["Hello world", "Hi"])
    try:
        output = forward(loaded.model, batch, [Recorder("a", events), Recorder("b", events)])
    finally:
        handle.remove()
    assert [name for name, _ in events] == ["a", "b", "model"]
    assert events[0][1] is batch and events[1][1] is batch
    assert output.logits.shape == (2, batch.layout.tokens, 512)


def test_forward_of_an_unpadded_batch_equals_a_plain_call(load_tiny) -> None:
    loaded = load_tiny("none")
    (batch,) = Runner(loaded).batches(["The quick brown fox"])
    with torch.inference_mode():
        plain = loaded.model(batch.input_ids).logits
    assert torch.equal(forward(loaded.model, batch).logits, plain)


# --- padding does not leak between sentences --------------------------------------------

#: How far a module's output may move between a sentence alone and in a padded batch,
#: as a fraction of the output's absmax. Padding changes matmul shapes and so the
#: order of float additions. float32: Higham's worst-case bound for a K-term dot
#: product is K*u = 256 * 6e-8 = 1.5e-5 (K = ffn 256), compounded over 4 layers: 1e-4
#: (measured: 5e-7). 8bit: LLM.int8 rounds activations and weights to steps of 1/127
#: of a row's absmax and picks its outlier columns over the whole batch, padding rows
#: included, so the two runs round differently by a few such steps: 5e-2 (measured:
#: 1.5e-2 on an AMD EPYC). The bugs guarded against (another sentence's tokens, padding
#: mixed into a sentence) move outputs by about their own size.
OUTPUT_DRIFT = {"none": 1e-4, "8bit": 5e-2}


def traced_with_outputs(model, texts: list[str], batch_size: int):
    """Results and every module's output per sentence (as if alone), in float64."""
    kept: dict[tuple[int, str, int], torch.Tensor] = {}

    def sink(index: int, name: str, call: int, tensor: torch.Tensor) -> None:
        kept[index, name, call] = tensor.detach().to(torch.float64).clone()

    results = list(iter_trace(model, texts, layers="all", batch_size=batch_size, sink=sink))
    return results, kept


def assert_stats_within_rounding(a, b, x: torch.Tensor, y: torch.Tensor) -> None:
    """a, b: statistics of x, y (one module's output alone and in a batch).

    Each statistic moves by no more than the difference of the tensors allows: mean by
    at most mean|x-y|; std and rms by at most rms(x-y) (both are norms up to a constant
    factor, and a norm is 1-Lipschitz); min, max, absmax by at most max|x-y|. Each side
    also carries the float32 reduction error test_stats.py bounds (rel 1e-5, 1e-6 of the
    absmax). The count of exact zeros changes only where an element is zero in one run
    and not the other; the other value then lies within max|x-y| of zero, so the change
    is at most the number of nonzero elements that close to zero, in either run. After
    the ReLU (activation_fn) those are the units on the edge of firing; elsewhere a
    float16 output can round to exactly zero, and the same bound covers it.
    """
    diff = (x - y).abs()
    drift = float(diff.max())
    scale = max(float(x.abs().max()), float(y.abs().max()))
    moves = {"mean": float(diff.mean()), "std": float(diff.square().mean().sqrt())}
    moves.update(rms=moves["std"], min=drift, max=drift, absmax=drift)
    sa, sb = a.stats.as_dict(), b.stats.as_dict()
    for key, move in moves.items():
        slack = 2 * (1e-5 * abs(sa[key]) + 1e-6 * scale)
        assert abs(sb[key] - sa[key]) <= move + slack, (a.name, key, sa[key], sb[key], move)
    near_zero = int(((x != 0) & (x.abs() <= drift)).sum() + ((y != 0) & (y.abs() <= drift)).sum())
    n = x.numel()
    zeros_a, zeros_b = round(sa["zeros"] * n), round(sb["zeros"] * n)
    assert zeros_a == int((x == 0).sum()) and zeros_b == int((y == 0).sum()), a.name
    assert abs(zeros_b - zeros_a) <= near_zero, (a.name, "zeros", zeros_a, zeros_b, near_zero)
    assert (sa["nan"], sa["inf"]) == (sb["nan"], sb["inf"]) == (0, 0), a.name


@pytest.mark.parametrize("quant", ["none", "8bit"])
def test_statistics_are_the_same_alone_and_in_a_padded_batch(load_tiny, quant: str) -> None:
    model = load_tiny(quant)
    batched, batched_outputs = traced_with_outputs(model, SENTENCES, batch_size=3)
    for i, text in enumerate(SENTENCES):
        (alone,), alone_outputs = traced_with_outputs(model, [text], batch_size=1)
        assert [m.name for m in alone.modules] == [m.name for m in batched[i].modules]
        for a, b in zip(alone.modules, batched[i].modules, strict=True):
            assert a.shape == b.shape, a.name
            x, y = alone_outputs[0, a.name, a.call], batched_outputs[i, b.name, b.call]
            assert x.shape == y.shape, a.name
            drift = float((x - y).abs().max())
            assert drift <= OUTPUT_DRIFT[quant] * float(x.abs().max()), (a.name, drift)
            assert_stats_within_rounding(a, b, x, y)

"""The hook context manager: true order, every submodule, cleanup, no side effects."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.modules import module as torch_module
from transformers.modeling_outputs import BaseModelOutput

from optinspect.engine.capture import capture, main_tensor

PRE_LN_LAYER_ORDER = [
    "model.decoder.layers.0",
    "model.decoder.layers.0.self_attn_layer_norm",
    "model.decoder.layers.0.self_attn",
    "model.decoder.layers.0.self_attn.q_proj",
    "model.decoder.layers.0.self_attn.k_proj",
    "model.decoder.layers.0.self_attn.v_proj",
    "model.decoder.layers.0.self_attn.out_proj",
    "model.decoder.layers.0.final_layer_norm",
    "model.decoder.layers.0.fc1",
    "model.decoder.layers.0.activation_fn",
    "model.decoder.layers.0.fc2",
]


def hook_count(model: nn.Module) -> int:
    """The model's own hooks, and the global ones that fire for every module."""
    own = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return (
        own + len(torch_module._global_forward_hooks) + len(torch_module._global_forward_pre_hooks)
    )


def all_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_modules() if n]


def test_every_module_of_layer_zero_in_forward_order(load_tiny) -> None:
    model = load_tiny("none").model
    layer0 = [n for n in all_names(model) if n.startswith("model.decoder.layers.0")]
    with capture(model, layer0) as cap:
        model(torch.tensor([[2, 100, 200, 300]]))
    records = cap.collect()[0]
    assert [r.name for r in records] == PRE_LN_LAYER_ORDER
    assert sorted(layer0) == sorted(PRE_LN_LAYER_ORDER)
    assert [r.depth for r in records[:4]] == [0, 1, 1, 2]
    fc1 = records[PRE_LN_LAYER_ORDER.index("model.decoder.layers.0.fc1")]
    assert fc1.shape == (4, 256) and fc1.dtype == "float32" and fc1.weight_dtype == "float32"


@pytest.mark.parametrize("quant", ["none", "8bit", "4bit"])
def test_logits_are_identical_with_and_without_tracing(load_tiny, quant: str) -> None:
    model = load_tiny(quant).model
    ids = torch.tensor([[2, 10, 20, 30, 40, 50]])
    with torch.inference_mode():
        bare = model(ids).logits.clone()
        with capture(model, all_names(model)) as cap:
            traced = model(ids).logits.clone()
        again = model(ids).logits
    assert len(cap.collect()[0]) > 0
    assert torch.equal(bare, traced)
    assert torch.equal(bare, again)


def test_hooks_are_removed_after_the_block(load_tiny) -> None:
    model = load_tiny("none").model
    before = hook_count(model)
    with capture(model, all_names(model)):
        assert hook_count(model) == before + 2  # most of the model: one global pair
    assert hook_count(model) == before
    with capture(model, PRE_LN_LAYER_ORDER):
        # A few modules: a pair per module, and the rest of the model runs unhooked.
        assert hook_count(model) == before + 2 * len(PRE_LN_LAYER_ORDER)
    assert hook_count(model) == before


def test_global_and_per_module_hooks_record_the_same_calls(load_tiny) -> None:
    model = load_tiny("none").model
    ids = torch.tensor([[2, 3, 4, 5, 6]])

    def records(per_module: bool) -> list:
        cap = capture(model, all_names(model))
        if per_module:
            cap._model_modules = 10**9  # as if the names were a small part of the model
        with cap:
            model(ids)
            return cap.collect()[0]

    global_records, module_records = records(False), records(True)
    # Every module the forward calls: all but the layers' ModuleList and `model`, which
    # OPTForCausalLM passes by (it calls `model.decoder` itself).
    assert len(global_records) == len(all_names(model)) - 2
    assert global_records == module_records  # same order, depths, shapes and statistics


def test_hooks_are_removed_after_an_exception_mid_forward(load_tiny) -> None:
    model = load_tiny("none").model
    before = hook_count(model)
    fc1 = model.get_submodule("model.decoder.layers.1.fc1")

    def explode(module: nn.Module, args: object, output: object) -> None:
        raise RuntimeError("boom")

    handle = fc1.register_forward_hook(explode)
    try:
        with pytest.raises(RuntimeError, match="boom"), capture(model, all_names(model)):
            model(torch.tensor([[2, 3, 4]]))
    finally:
        handle.remove()
    assert hook_count(model) == before


class Twice(nn.Module):
    """Calls one submodule twice and returns non-tensor outputs from others."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.pair = PairOut()
        self.nothing = NoneOut()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.nothing(x)
        y = self.lin(self.lin(x))
        return self.pair(y)[0]


class PairOut(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        return x * 2, 7


class NoneOut(nn.Module):
    def forward(self, x: torch.Tensor) -> None:
        return None


def test_repeated_calls_get_a_call_index_and_odd_outputs_are_described() -> None:
    model = Twice()
    with capture(model, ["lin", "pair", "nothing"]) as cap:
        model(torch.ones(2, 3))
    records = cap.collect()[0]
    assert [(r.name, r.call) for r in records] == [
        ("nothing", 0),
        ("lin", 0),
        ("lin", 1),
        ("pair", 0),
    ]
    assert records[0].output == "none" and records[0].shape is None and records[0].stats is None
    assert records[3].output == "tensor" and records[3].shape == (2, 3)
    assert records[1].weight_shape == (3, 3)


def test_main_tensor_of_model_outputs() -> None:
    hidden = torch.zeros(1, 2, 3)
    assert main_tensor(BaseModelOutput(last_hidden_state=hidden)) is hidden
    assert main_tensor((hidden, None)) is hidden
    assert main_tensor({"a": 1}) is None
    assert main_tensor("text") is None


@pytest.mark.parametrize(
    ("quant", "linear_type", "weight_dtype"),
    [("8bit", "Linear8bitLt", "int8"), ("4bit", "Linear4bit", "uint8")],
)
def test_quantized_weights_are_reported(load_tiny, quant: str, linear_type: str, weight_dtype: str):
    model = load_tiny(quant).model
    with capture(model, ["model.decoder.layers.0.fc1"]) as cap:
        model(torch.tensor([[2, 3, 4]]))
    (record,) = cap.collect()[0]
    assert record.type == linear_type
    assert record.weight_dtype == weight_dtype
    assert record.dtype == "float16"
    if quant == "4bit":
        # Packed storage: two 4-bit values per byte, so half the logical 256*64 elements.
        # The layout is the CPU's: (8192, 1) as quantized, (256, 32) once bitsandbytes
        # repacks it for AVX512-BF16 at the first forward without grad.
        assert math.prod(record.weight_shape) == 256 * 64 // 2
    else:
        assert record.weight_shape == (256, 64)

"""The hook context manager: which modules, in what order, and what is recorded.

    with capture(model, ["model.decoder.layers.0.fc1"]) as cap:
        model(**inputs)
    records = cap.collect()[0]

Hooks exist only inside the ``with`` block and are removed on every path,
including an exception raised mid-forward. Hooks never change a module's
output, so the model computes exactly what it would without them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from ..model.names import layer_of
from ..model.placement import placement_name, placement_of
from ..results.records import Histogram, ModuleRecord, TensorStats, fast_new
from .batch import Batch, BatchLayout
from .histogram import fetch_histograms, output_histogram
from .hooks import HookGroup
from .stats import OncePerTensor, TokenPartials, finalize_stats, merge_partials

__all__ = ["Capture", "TensorSink", "capture", "main_tensor"]

#: Receives (sentence index, module name, call, output as if the sentence ran alone).
TensorSink = Callable[[int, str, int, torch.Tensor], None]


def main_tensor(output: Any) -> torch.Tensor | None:
    """The tensor that stands for a module's output.

    A tensor is itself; a ModelOutput (any mapping) gives its logits or last
    hidden state, else its first tensor; a tuple or list gives its first item
    when that is a tensor. Anything else has none.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        for key in ("logits", "last_hidden_state"):
            value = output.get(key)
            if isinstance(value, torch.Tensor):
                return value
        return next((v for v in output.values() if isinstance(v, torch.Tensor)), None)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


@dataclass(slots=True)
class _Call:
    """A module call that has started; completed when its forward hook fires."""

    name: str
    module: nn.Module
    call: int
    depth: int
    output: str = "not returned"
    dtype: torch.dtype | None = None
    device: torch.device | None = None
    shapes: list[tuple[int, ...]] | None = None  # per sentence, as if run alone (or a Size)
    partials: TokenPartials | None = None  # per token, on the output's device
    valid: torch.Tensor | None = None  # [batch, tokens] real tokens, None when none is padding
    finished: int = -1
    histogram: torch.Tensor | None = None  # output_histogram's row, on the output's device


class Capture(HookGroup):
    """Records every call of the named modules during the forward passes in its block.

    With ``bins`` (and ``stats``), each output is also binned on its device between its
    own extremes (``engine.histogram``); ``histograms()`` reads them after a pass.
    """

    def __init__(
        self,
        model: nn.Module,
        names: Iterable[str],
        *,
        stats: bool = True,
        sink: TensorSink | None = None,
        bins: int = 0,
    ) -> None:
        super().__init__()
        self._bins = bins if stats else 0
        modules = dict(model.named_modules())
        self._targets = [(name, modules[name]) for name in names]
        self._model_modules = len(modules)
        self._stats = stats
        self._sink = sink
        self._partials = OncePerTensor()
        self._static: dict[str, _Static] = {}
        self._device_map = getattr(model, "hf_device_map", None)
        self._layout: BatchLayout | None = None
        self._first_index = 0
        self._reset()

    def _reset(self) -> None:
        self._calls: list[_Call] = []
        self._open: dict[str, list[_Call]] = {}
        self._counts: dict[str, int] = {}
        self._partials.clear()
        self._binned: dict[int, torch.Tensor] = {}
        self._depth = 0
        self._finished = 0

    # -- hooks -----------------------------------------------------------
    def _register(self) -> None:
        pre = {module: self._make_pre(name) for name, module in self._targets}
        post = {module: self._make_post(name) for name, module in self._targets}
        self._hook_modules(pre, post, self._model_modules)

    def begin(self, batch: Batch) -> None:
        """Start a new forward pass over ``batch``; its sentences are numbered from
        ``batch.first`` for the sink, and a batch of one is read as unpadded input."""
        self._layout = batch.layout if batch.size > 1 else None
        self._first_index = batch.first
        self._reset()

    # -- hooks -----------------------------------------------------------
    def _make_pre(self, name: str) -> Callable[..., None]:
        def pre_hook(module: nn.Module, args: Any) -> None:
            count = self._counts.get(name, 0)
            self._counts[name] = count + 1
            call = _Call(name, module, count, self._depth)
            self._calls.append(call)
            stack = self._open.get(name)
            if stack is None:
                self._open[name] = [call]
            else:
                stack.append(call)
            self._depth += 1

        return pre_hook

    def _make_post(self, name: str) -> Callable[..., None]:
        def post_hook(module: nn.Module, args: Any, output: Any) -> None:
            self._depth -= 1
            call = self._open[name].pop()
            call.finished = self._finished
            self._finished += 1
            tensor = output if type(output) is torch.Tensor else main_tensor(output)
            if tensor is None:
                call.output = "none" if output is None else type(output).__name__
                return
            call.output = "tensor"
            call.dtype = tensor.dtype  # named in collect, not here
            call.device = tensor.device
            if self._layout is None and self._sink is None:
                # One sentence and nothing to save (a plain trace): the fewest steps,
                # since this runs for every module between the model's own kernels.
                shape = tensor.shape
                call.shapes = [shape]
                if self._stats and not tensor.is_meta:
                    view = _one_sentence(tensor, shape)
                    call.partials = self._partials.of(tensor, view)
                    if self._bins:
                        call.histogram = self._histogram(view, call.partials, None)
                return
            view, split = self._per_sentence(tensor)
            call.shapes = _shapes_alone(tensor, self._layout, split)
            if self._stats and not tensor.is_meta and view is not None:
                call.partials = self._partials.of(tensor, view)
                call.valid = self._layout.valid if split and self._layout is not None else None
                if self._bins:
                    call.histogram = self._histogram(view, call.partials, call.valid)
            batched = self._layout is not None and self._layout.batch > 1
            if self._sink is not None and (split or not batched):
                lengths = self._layout.lengths if split and self._layout is not None else (0,)
                for b, n in enumerate(lengths):
                    alone = view[b : b + 1, :n] if split and view is not None else tensor
                    self._sink(
                        self._first_index + b, name, call.call, alone.reshape(call.shapes[b])
                    )

        return post_hook

    def _per_sentence(self, tensor: torch.Tensor) -> tuple[torch.Tensor | None, bool]:
        """A [batch, tokens, features] view of ``tensor``, and whether it splits the batch.

        When the leading dims are the batch's [batch, tokens] (or flattened to
        batch*tokens), each sentence is a slice. A single sentence is viewed as
        rows of its last dim. A padded batch whose output has another layout has
        no per-sentence view (None).
        """
        layout = self._layout
        if layout is not None:
            shape = tuple(tensor.shape)
            b, t = layout.batch, layout.tokens
            if len(shape) >= 2 and shape[:2] == (b, t):
                return tensor.reshape(b, t, -1), True
            if len(shape) >= 1 and shape[0] == b * t:
                return tensor.reshape(b, t, -1), True
            if b > 1:
                return None, False
        return _one_sentence(tensor, tensor.shape), False

    def _histogram(
        self, view: torch.Tensor, partials: TokenPartials, valid: torch.Tensor | None
    ) -> torch.Tensor:
        """The output's histogram row; a parent returning its child's tensor shares it."""
        row = self._binned.get(id(partials))
        if row is None:
            row = self._binned[id(partials)] = output_histogram(view, partials, valid, self._bins)
        return row

    def _describe(self, name: str, module: nn.Module) -> _Static:
        """What a record says of the module itself, worked out once per capture."""
        static = self._static.get(name)
        if static is None:
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor):
                static = _Static(
                    type(module).__name__,
                    layer_of(name),
                    _dtype_name(weight.dtype),
                    tuple(weight.shape),
                    self._weight_device(name, weight),
                )
            else:
                static = _Static(type(module).__name__, layer_of(name), None, None, None)
            self._static[name] = static
        return static

    def _weight_device(self, name: str, weight: torch.Tensor) -> str:
        """The weight's device; for accelerate-offloaded weights (on meta), their home."""
        if weight.device.type == "meta" and self._device_map:
            where = placement_of(self._device_map, name)
            if where is not None:
                return placement_name(where)
        return _device_name(weight.device)

    # -- results ---------------------------------------------------------
    def _combine_all(self, batch: int) -> dict[int, list[TensorStats]]:
        """Every call's statistics, combined a group of same-shaped calls at a time.

        One host transfer per device at the end; calls whose output does not
        split into this batch's sentences get none.
        """
        groups: dict[tuple[Any, ...], list[_Call]] = {}
        for c in self._calls:
            if c.partials is not None:
                values = c.partials.values
                key = (values.shape[:2], values.get_device(), id(c.valid))
                group = groups.get(key)
                if group is None:
                    groups[key] = [c]
                else:
                    group.append(c)
        matrices: list[torch.Tensor] = []
        for calls in groups.values():
            merged = merge_partials([c.partials for c in calls], calls[0].valid)
            matrices.append(merged.reshape(-1, 9))
        rows = finalize_stats(matrices)
        out: dict[int, list[TensorStats]] = {}
        position = 0
        for (shape, _, _), calls in groups.items():
            n = shape[0]  # the partials' batch: this batch's sentences, or 1 for others
            for c in calls:
                out[id(c)] = rows[position : position + n] if n == batch else []
                position += n
        return out

    def collect(self) -> list[list[ModuleRecord]]:
        """Records of the last forward pass, one list per sentence, in execution order.

        Statistics of every module come to the host in one transfer.
        """
        batch = self._layout.batch if self._layout is not None else 1
        per_call = self._combine_all(batch)
        sentences: list[list[ModuleRecord]] = [[] for _ in range(batch)]
        for index, c in enumerate(self._calls):
            static = self._describe(c.name, c.module)
            stats = per_call.get(id(c)) or None
            for b in range(batch):
                sentences[b].append(
                    fast_new(  # ModuleRecord's fields, in order
                        ModuleRecord,
                        index,
                        c.name,
                        static.type,
                        static.layer,
                        c.call,
                        c.depth,
                        c.output,
                        tuple(c.shapes[b]) if c.shapes else None,
                        None if c.dtype is None else _dtype_name(c.dtype),
                        None if c.device is None else _device_name(c.device),
                        static.weight_dtype,
                        static.weight_shape,
                        stats[b] if stats is not None else None,
                        c.finished,
                        static.weight_device,
                    )
                )
        return sentences

    def histograms(self) -> dict[tuple[str, int], Histogram]:
        """The last forward pass's histograms by (module name, call), over the batch's
        real tokens; one transfer to the host. Empty unless made with ``bins``."""
        calls = [c for c in self._calls if c.histogram is not None]
        rows = fetch_histograms([c.histogram for c in calls if c.histogram is not None])
        return {(c.name, c.call): row for c, row in zip(calls, rows, strict=True)}


def _one_sentence(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """One sentence's output as [1, tokens, features]: rows of its last dim.

    A scalar or an empty tensor is one row of one feature (or none). The usual
    [1, tokens, features] is itself, and [tokens, features] (fc1, fc2) a view.
    """
    rank = len(shape)
    if rank == 0 or tensor.numel() == 0:
        return tensor.reshape(1, -1, 1)
    if rank == 3 and shape[0] == 1:
        return tensor
    if rank == 2:
        return tensor.unsqueeze(0)
    return tensor.reshape(1, -1, shape[-1])


def _shapes_alone(
    tensor: torch.Tensor, layout: BatchLayout | None, split: bool
) -> list[tuple[int, ...]]:
    """Each sentence's output shape as it would be had the sentence run alone."""
    shape = tuple(tensor.shape)
    if layout is None or not split:
        return [shape] * (layout.batch if layout is not None else 1)
    b, t = layout.batch, layout.tokens
    if len(shape) >= 2 and shape[:2] == (b, t):
        return [(1, n, *shape[2:]) for n in layout.lengths]
    if shape[0] == b * t:
        return [(n, *shape[1:]) for n in layout.lengths]
    return [shape]


class _Static(NamedTuple):
    """A record's fields that describe the module, not the call."""

    type: str
    layer: int | None
    weight_dtype: str | None
    weight_shape: tuple[int, ...] | None
    weight_device: str | None


_DTYPE_NAMES: dict[torch.dtype, str] = {}
_DEVICE_NAMES: dict[torch.device, str] = {}


def _dtype_name(dtype: torch.dtype) -> str:
    """``float16`` for torch.float16; memoised, as every record asks."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).removeprefix("torch.")
    return name


def _device_name(device: torch.device) -> str:
    """``cuda:0`` for that device; memoised, as every record asks."""
    name = _DEVICE_NAMES.get(device)
    if name is None:
        name = _DEVICE_NAMES[device] = str(device)
    return name


def capture(
    model: nn.Module,
    names: Iterable[str],
    *,
    stats: bool = True,
    sink: TensorSink | None = None,
    bins: int = 0,
) -> Capture:
    """Hook ``names`` (dotted names from ``model.named_modules()``) for one ``with`` block;
    ``bins`` > 0 also bins every output (``Capture.histograms``)."""
    return Capture(model, names, stats=stats, sink=sink, bins=bins)

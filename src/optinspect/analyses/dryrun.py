"""Shapes and dtypes of every module from a forward pass on the meta device: no weights."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch

from ..engine.batch import Batch
from ..engine.capture import capture
from ..engine.hooks import HookGroup
from ..engine.preflight import check_text
from ..engine.runner import describe_token, forward
from ..engine.selection import LayerSpec, select_names
from ..errors import ModelError, UsageError
from ..model.loading import resolve_dtype
from ..model.names import module_names
from ..model.placement import resolve_device
from ..model.quiet import quiet
from ..model.spec import build_meta_model, read_config, resolve_source
from ..results.records import ModelInfo, ModuleRecord, Token
from ..results.trace import TraceResult

__all__ = ["dry_run", "output_bytes_per_token"]

#: OPT checkpoints share one tokenizer; any of these found in the cache will do.
_SHARED_TOKENIZERS = ("facebook/opt-125m", "facebook/opt-350m", "facebook/opt-1.3b")


class _Done(Exception):
    """Raised inside the forward once every selected module has run."""


class _StopAfter(HookGroup):
    """Ends a meta forward as soon as all of ``names`` have run once.

    Later layers cannot change the shapes of earlier ones, so ``--layer 0`` of
    opt-175b need not run the other 95 layers.
    """

    def __init__(self, model: torch.nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        modules = dict(model.named_modules())
        self._targets = [modules[name] for name in names]
        self._waiting = {id(m) for m in self._targets}

    def _register(self) -> None:
        for module in self._targets:
            self._keep(module.register_forward_hook(self._finished))

    def _finished(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self._waiting.discard(id(module))
        if not self._waiting:
            raise _Done


def _load_tokenizer(location: str, is_local: bool, model_type: str) -> Any | None:
    from transformers import AutoTokenizer

    # Only OPT checkpoints share a tokenizer: another family's hub id needs its own.
    shared = _SHARED_TOKENIZERS if model_type == "opt" else ()
    candidates = [location] if is_local else [location, *shared]
    for candidate in candidates:
        try:
            with quiet(verbose=False):
                return AutoTokenizer.from_pretrained(candidate, trust_remote_code=False)
        except (OSError, ValueError):
            continue
    return None


def dry_run(
    spec: str,
    text: str | None,
    *,
    tokens: int | None = None,
    quant: str = "8bit",
    dtype: str = "auto",
    device: str = "auto",
    layers: LayerSpec = None,
    filters: Sequence[str] = (),
) -> TraceResult:
    """Trace output shapes and dtypes on the meta device, in execution order.

    The text is tokenized with the model's tokenizer when one is available
    offline (any cached OPT tokenizer serves an OPT family member; other families need
    their own); ``tokens`` gives
    the length instead. Quantized linear layers are not built: their outputs
    have the compute dtype, as in a real run, and ``weight_dtype`` is the
    compute dtype too. Statistics are null because no values exist.
    """
    source = resolve_source(spec)
    config = read_config(source)
    torch_dtype = resolve_dtype(dtype, quant, resolve_device(device))
    limit = int(config.max_position_embeddings)
    token_list: list[Token] = []
    if tokens is not None:
        if tokens < 1:
            raise UsageError(f"--tokens must be at least 1, not {tokens}")
        count = tokens
    else:
        check_text(text or "", "trace")
        tokenizer = _load_tokenizer(source.location, source.is_local, config.model_type)
        if tokenizer is None:
            raise ModelError(
                f"no tokenizer for {spec} is available offline: give --tokens N instead"
            )
        ids = tokenizer(text)["input_ids"]
        token_list = [describe_token(tokenizer, int(i)) for i in ids]
        count = len(ids)
    if count > limit:
        raise UsageError(f"the text has {count} tokens; {spec} accepts at most {limit}")

    # Any ids do for shapes when only a length was given: 2 is </s>.
    ids = token_list or [Token(2, "</s>")] * count
    records = _meta_records(config, torch_dtype, layers, filters, ids, text or "")
    dtype_name = str(torch_dtype).removeprefix("torch.")
    return TraceResult(
        info=ModelInfo(spec, quant, "meta", dtype_name, random_weights=False),
        text=text if tokens is None else None,
        tokens=tuple(token_list),
        modules=records,
        dry_run=True,
    )


def _meta_records(
    config: Any,
    dtype: torch.dtype,
    layers: LayerSpec,
    filters: Sequence[str],
    ids: Sequence[Token],
    text: str = "",
) -> tuple[ModuleRecord, ...]:
    """The selected modules' records (shapes and dtypes) from a pass of ``ids`` on the meta
    device, stopped once each of them has run."""
    model = build_meta_model(config, dtype)
    # Shapes only: GPT-2 and the Llama layout read values of the ids (is there padding?
    # are sequences packed?), which meta tensors cannot answer. With no pad id and a
    # cache (which this pass throws away) they ask nothing of them.
    model.config.pad_token_id = None
    names = select_names(module_names(model), int(config.num_hidden_layers), layers, filters)
    batch = Batch.of([text], [ids], pad_id=1)
    with (
        capture(model, names, stats=False) as cap,
        _StopAfter(model, names) as stop,
        contextlib.suppress(_Done),
    ):
        forward(model, batch, [cap, stop], use_cache=True)
    return tuple(cap.collect()[0])


def output_bytes_per_token(
    config: Any, dtype: torch.dtype, *, layers: LayerSpec = None, filters: Sequence[str] = ()
) -> int:
    """The bytes one token adds to the selected modules' outputs (what ``trace --save``
    writes of it), from a one-token pass on the meta device: no weights. Every output a
    trace records grows with the tokens and nothing else, so a text of N tokens takes N
    times this."""
    records = _meta_records(config, dtype, layers, filters, [Token(2, "</s>")])
    return sum(
        math.prod(record.shape) * _element_size(record.dtype)
        for record in records
        if record.output == "tensor" and record.shape is not None and record.dtype is not None
    )


def _element_size(dtype_name: str) -> int:
    return torch.empty((), dtype=getattr(torch, dtype_name), device="meta").element_size()

"""Exact parameter and weight-byte counts of a model, from its config alone.

    from optinspect.analyses.params import count_params, inventory_params
    report = count_params(inventory_params("facebook/opt-1.3b"), by="group")
    report.total, [(row.name, row.params) for row in report.rows]

No weights are read or downloaded. A row of the family table
(``optinspect.model.family``: OPT, Llama, Mistral, Qwen2.5, GPT-2) is counted from its
built-in config by
``list_config_params``, in pure Python, so it answers in well under a second
without importing torch; any other model is built on the meta device and its
parameters listed with ``list_module_params``. Both give the same entries for the
same config, which the tests check for every family member. The records (``ParamReport``,
``ParamsResult``, ...) are ``results.params``'; ``compute`` is ``params --loaded``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model.families import ADAPTERS, FamilyAdapter, adapter_for_names
from ..model.family import ParamEntry, family_config, list_config_params
from ..model.names import layer_group, role_of
from ..results.params import LoadedCount, ParamReport, ParamRow, ParamsResult, WeightBytes

if TYPE_CHECKING:
    from torch import nn

    from .job import Context

__all__ = [
    "BY_MODES",
    "GROUPS",
    "LoadedCount",
    "ParamEntry",
    "ParamInventory",
    "ParamReport",
    "ParamRow",
    "ParamsResult",
    "WeightBytes",
    "compute",
    "count_params",
    "estimate_bytes",
    "inventory_params",
    "list_module_params",
    "measure_loaded",
]

BY_MODES = ("group", "layer", "module", "type")
#: Groups of ``--by group``, in the order they are shown.
GROUPS = (
    "token embeddings",
    "position embeddings",
    "projections",
    "attention projections",
    "feed-forward layers",
    "layer norms",
    "lm head",
    "other",
)
#: bitsandbytes NF4: values per absmax block, and the float32 code table each layer keeps.
NF4_BLOCK = 64
NF4_CODE_BYTES = 16 * 4


@dataclass(frozen=True)
class ParamInventory:
    """Every distinct parameter of a model, in ``named_parameters()`` order.

    tied_to names the parameter ``lm_head.weight`` shares, when it is tied; the
    shared tensor is listed (and counted) once, under the token embeddings.
    builtin says the config came from ``optinspect.model.family``, not from a file.
    """

    model: str
    entries: tuple[ParamEntry, ...]
    tied_to: str | None
    builtin: bool

    @property
    def total(self) -> int:
        return sum(entry.numel for entry in self.entries)


def list_module_params(model: nn.Module) -> tuple[tuple[ParamEntry, ...], str | None]:
    """The distinct parameters of a built model (meta or real), each shared tensor once.

    Returns the entries and the name of the parameter ``lm_head.weight`` is the
    same tensor as, if any.
    """
    modules = dict(model.named_modules())
    entries: list[ParamEntry] = []
    for name, param in model.named_parameters():  # skips a shared tensor's second name
        module_name, _, _ = name.rpartition(".")
        module_type = type(modules[module_name]).__name__
        entries.append(ParamEntry(name, module_name, module_type, tuple(param.shape)))
    tied_to = None
    head_name = adapter_for_names(modules).head
    head = modules.get(head_name)
    if head is not None:
        owners = {id(param): name for name, param in model.named_parameters()}
        owner = owners.get(id(head.weight))
        if owner is not None and owner != f"{head_name}.weight":
            tied_to = owner
    return tuple(entries), tied_to


def inventory_params(spec: str) -> ParamInventory:
    """List the parameters of the model ``spec`` names, reading no weights.

    A row of the family table (``facebook/opt-1.3b``, ``meta-llama/Llama-3.1-8B``; a
    local folder of that name wins) comes from its built-in config without importing
    torch; anything else goes through ``loading.read_config`` (folders, ``tiny``, the
    hub cache) and the meta device.
    """
    raw = None if Path(spec).expanduser().exists() else family_config(spec)
    if raw is not None:
        entries, tied_to = list_config_params(raw)
        return ParamInventory(model=spec, entries=entries, tied_to=tied_to, builtin=True)

    from ..model.spec import build_meta_model, read_config, resolve_source

    config = read_config(resolve_source(spec))
    entries, tied_to = list_module_params(build_meta_model(config))
    return ParamInventory(model=spec, entries=entries, tied_to=tied_to, builtin=False)


#: Every family's head, by full dotted name.
_HEADS = frozenset(a.head for a in ADAPTERS)
#: Classes bitsandbytes replaces with its quantized linear layers (GPT-2's Conv1D too).
_QUANTIZED_TYPES = ("Linear", "Conv1D")


def is_quantized(entry: ParamEntry) -> bool:
    """Whether bitsandbytes stores this parameter quantized: every linear weight
    (``Linear``, GPT-2's ``Conv1D``) but the head."""
    return (
        entry.module_type in _QUANTIZED_TYPES
        and entry.module not in _HEADS
        and entry.kind == "weight"
    )


def estimate_bytes(entry: ParamEntry) -> WeightBytes:
    """Bytes this parameter takes at each precision, as transformers + bitsandbytes store it.

    float32 and float16 (or bfloat16): 4 and 2 bytes a value. int8 (LLM.int8):
    a quantized weight is one byte a value plus one float32 scale per output
    row (``SCB``). nf4: a quantized weight is half a byte a value (two packed a
    byte, rounded up), one float32 absmax per block of 64 values and the
    16-entry float32 NF4 code table of its layer. Everything not quantized (biases,
    embeddings, LayerNorms, ``lm_head``) is float16 in both.
    """
    n = entry.numel
    half = 2 * n
    if not is_quantized(entry):
        return WeightBytes(float32=4 * n, float16=half, int8=half, nf4=half)
    rows = entry.shape[-1] if entry.module_type == "Conv1D" else entry.shape[0]  # [in, out]
    int8 = n + 4 * rows
    nf4 = -(-n // 2) + 4 * -(-n // NF4_BLOCK) + NF4_CODE_BYTES
    return WeightBytes(float32=4 * n, float16=half, int8=int8, nf4=nf4)


def group_of(entry: ParamEntry, adapter: FamilyAdapter) -> str:
    """The ``--by group`` bucket of a parameter, from its module's name and class and the
    family adapter's names and role groups."""
    leaf = entry.module.rsplit(".", 1)[-1]
    if entry.module == adapter.token_embeddings:
        return "token embeddings"
    if entry.module == adapter.position_embeddings:
        return "position embeddings"
    if leaf in ("project_in", "project_out"):
        return "projections"
    if entry.module_type.endswith(("LayerNorm", "RMSNorm")):  # Qwen3's q_norm too
        return "layer norms"
    role = role_of(entry.module) or ""
    for prefix, group in adapter.param_groups:
        if role.startswith(prefix):
            return group
    if entry.module == adapter.head:
        return "lm head"
    return "other"


def _key(entry: ParamEntry, by: str, adapter: FamilyAdapter) -> str:
    if by == "group":
        return group_of(entry, adapter)
    if by == "layer":
        return layer_group(entry.module)
    if by == "module":
        return entry.module
    return entry.module_type


def count_params(inventory: ParamInventory, by: str = "group") -> ParamReport:
    """Break the inventory down ``by`` group, layer, module or type; rows add up to the total.

    Rows of ``group`` come in ``GROUPS`` order; the others in the order their
    first parameter appears in ``named_parameters()`` (the order of ``print(model)``).
    Empty groups are left out.
    """
    from ..errors import UsageError

    if by not in BY_MODES:
        raise UsageError(f"unknown breakdown {by!r}: use {', '.join(BY_MODES)}")
    adapter = adapter_for_names(entry.module for entry in inventory.entries)
    params: dict[str, int] = {}
    weights: dict[str, WeightBytes] = {}
    for entry in inventory.entries:
        key = _key(entry, by, adapter)
        params[key] = params.get(key, 0) + entry.numel
        weights[key] = weights.get(key, WeightBytes()) + estimate_bytes(entry)
    keys: Iterable[str] = params
    if by == "group":
        keys = [group for group in GROUPS if group in params]
    rows = tuple(ParamRow(key, params[key], weights[key]) for key in keys)
    total_bytes = sum((row.bytes for row in rows), WeightBytes())
    return ParamReport(
        model=inventory.model,
        by=by,
        total=inventory.total,
        tied_to=inventory.tied_to,
        builtin=inventory.builtin,
        rows=rows,
        bytes=total_bytes,
    )


def _quant_tensors(module: Any, param: Any) -> list[Any]:
    """The tensors bitsandbytes keeps beside a quantized weight, nested statistics included.

    LLM.int8 keeps its row scales (``SCB``) on the weight until the layer's first
    forward, then on the layer's ``state``: both places are looked at, so a model
    that has run counts the same bytes as one just loaded.
    """
    found = []
    for owner in (param, getattr(module, "state", None)):
        scb = getattr(owner, "SCB", None)
        if scb is not None:
            found.append(scb)
    state = getattr(param, "quant_state", None)
    while state is not None:
        found.extend(t for t in (state.absmax, state.code, state.offset) if t is not None)
        state = getattr(state, "state2", None)
    return found


def _logical_numel(module: Any, param: Any) -> int:
    state = getattr(param, "quant_state", None)
    if state is not None and getattr(state, "shape", None) is not None:
        return math.prod(state.shape)
    if type(param).__name__ == "Params4bit":  # not quantized yet: trust the layer's shape
        return int(module.in_features) * int(module.out_features)
    return int(param.numel())


def measure_loaded(model: nn.Module, *, quant: str, device: str, dtype: str) -> LoadedCount:
    """Count the logical and stored parameters of a loaded model and the bytes it occupies."""
    seen: set[object] = set()
    counted: set[int] = set()
    params = stored = nbytes = 0

    def add_bytes(tensor: Any) -> None:
        nonlocal nbytes
        size = tensor.numel() * tensor.element_size()
        pointer = tensor.data_ptr() if size and not tensor.is_meta else 0
        key = (pointer, size) if pointer else id(tensor)  # one storage is counted once
        if key not in seen:
            seen.add(key)
            nbytes += size

    for module in model.modules():
        for param in module.parameters(recurse=False):
            if id(param) in counted:
                continue
            counted.add(id(param))
            params += _logical_numel(module, param)
            stored += param.numel()
            add_bytes(param)
            for extra in _quant_tensors(module, param):
                add_bytes(extra)
    for buffer in model.buffers():
        add_bytes(buffer)
    return LoadedCount(quant, device, dtype, params, stored, nbytes)


def compute(
    ctx: Context, plan: None, texts: None, *, model: str, by: str
) -> Iterator[ParamsResult]:
    """``params --loaded``, where the model is: the count from the config, then the
    loaded model's logical and stored parameters and memory."""
    report = count_params(inventory_params(model), by=by)
    loaded = ctx.model()
    measured = measure_loaded(
        loaded.model, quant=loaded.quant, device=loaded.device, dtype=loaded.dtype_name
    )
    yield ParamsResult(report, measured)

"""Loading a checkpoint of a supported family: quantization, placement, tokenizer and weights.

    loaded = load_model("tiny", quant="none", device="cpu")
    loaded.info                 # ModelInfo(model="tiny", quant="none", ...)

Every transformers, bitsandbytes and accelerate choice lives here. What
``--model`` names is resolved in ``spec``; where the model runs in ``placement``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import (
    PICKLE_REFUSED,
    CheckpointError,
    ModelError,
    UsageError,
    first_line,
    translate,
)
from ..results.records import ModelInfo
from .placement import check_placement, mapped_device, parse_max_memory, resolve_device
from .quiet import no_hub_kernels, quiet
from .settings import DEFAULT_MODEL, LoadSettings, check_quant_dtype
from .spec import (
    RANDOM_WEIGHTS_KEY,
    ModelSource,
    build_meta_model,
    model_class,
    read_config,
    resolve_source,
)

__all__ = [
    "DEFAULT_MODEL",
    "QUANTS",
    "LoadedModel",
    "Placement",
    "load_from_settings",
    "load_model",
    "quantization_config",
    "resolve_dtype",
    "resolve_placement",
    "switch_attention",
]

QUANTS = ("8bit", "4bit", "none")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class LoadedModel:
    """A model ready to run, with the choices that produced it."""

    model: nn.Module
    tokenizer: Any
    source: ModelSource
    quant: str
    device: str
    dtype: torch.dtype
    random_weights: bool
    #: The settings it was loaded with (``load_model``'s arguments, the model as asked
    #: for): what loads the same model again, or the same model in another setting.
    settings: LoadSettings | None = None

    @property
    def name(self) -> str:
        return self.source.display

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def info(self) -> ModelInfo:
        """What every result record says about its model."""
        return ModelInfo(
            model=self.name,
            quant=self.quant,
            device=self.device,
            dtype=self.dtype_name,
            random_weights=self.random_weights,
        )

    @property
    def max_positions(self) -> int:
        return int(self.model.config.max_position_embeddings)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)


@dataclass(frozen=True)
class Placement:
    """Where the weights go: one device, or an accelerate device map with its caps."""

    device: str  # the compute device; for a map, the one it starts from
    device_map: str | None = None
    max_memory: dict[int | str, int] | None = None
    offload_dir: str | None = None

    @property
    def label(self) -> str:
        """The ``device`` a result reports: the device, or ``map:<strategy>``."""
        return self.device if self.device_map is None else f"map:{self.device_map}"

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"device_map": self.device_map or {"": self.device}}
        if self.max_memory is not None:
            kwargs["max_memory"] = self.max_memory
        if self.offload_dir is not None:
            kwargs["offload_folder"] = self.offload_dir
        return kwargs


def resolve_placement(
    device: str = "auto",
    device_map: str | None = None,
    max_memory: str | None = None,
    offload_dir: str | Path | None = None,
    quant: str = "none",
) -> Placement:
    """Check the placement options; ``--max-memory`` or ``--offload-dir`` imply a map.

    The checks that need no weights are ``placement.check_placement``, which preflight
    runs before loading; they run here too, for callers of the Python API.
    """
    check_placement(
        device,
        device_map,
        quant=quant,
        max_memory=max_memory,
        offload_dir=None if offload_dir is None else str(offload_dir),
    )
    device = device.strip().lower()
    device_map = device_map.strip().lower() if device_map is not None else None
    memory = parse_max_memory(max_memory) if max_memory is not None else None
    if (memory is not None or offload_dir is not None) and device_map is None:
        device_map = "auto"
    if device_map is None:
        return Placement(resolve_device(device))
    # The folder the check accepted: ``~`` expanded, as accelerate would not.
    offload = str(Path(offload_dir).expanduser()) if offload_dir is not None else None
    return Placement(mapped_device(), device_map, memory, offload)


def resolve_dtype(dtype: str, quant: str, device: str) -> torch.dtype:
    """``auto``: float16 for quantized models and on CUDA, float32 on the CPU."""
    check_quant_dtype(quant, dtype)
    if dtype != "auto":
        if dtype not in DTYPES:
            raise UsageError(f"unknown dtype {dtype!r}: use auto, {', '.join(DTYPES)}")
        return DTYPES[dtype]
    if quant != "none" or device.startswith("cuda"):
        return torch.float16
    return torch.float32


def import_bitsandbytes(verbose: bool = False) -> None:
    """Import bitsandbytes without compiling its CPU kernels or fetching hub kernels.

    It decides at import which CPU kernels to use, and on CPUs with AVX512-BF16
    reaches for ``kernels`` (code from the hub) and logs when that fails:
    ``quiet`` keeps both from happening and the log line from the user.

    bitsandbytes wraps a few default (CPU) kernels in ``torch.compile`` when it is
    imported, which pulls in inductor (about 1.9 s) and compiles C++ at the first
    call. Its wrapper falls back to the plain function when ``torch.compile``
    raises, so while it is imported ``torch.compile`` raises: the kernels run
    eagerly, the same operations without a compile step.
    """
    import sys

    if "bitsandbytes" in sys.modules:
        return
    original = torch.compile

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("optinspect: torch.compile is off while bitsandbytes is imported")

    torch.compile = refuse  # type: ignore[assignment]
    try:
        with quiet(verbose):
            import bitsandbytes  # noqa: F401
    finally:
        torch.compile = original


def quantization_config(
    quant: str, dtype: torch.dtype, *, offload: bool = False, verbose: bool = False
) -> Any:
    """The BitsAndBytesConfig for ``quant``, or None for full precision.

    4-bit layers compute in ``dtype``. With ``offload`` (a device map that may put
    modules on the CPU or disk) those modules stay unquantized in float32, as
    bitsandbytes requires.
    """
    if quant not in QUANTS:
        raise UsageError(f"unknown quantization {quant!r}: use {', '.join(QUANTS)}")
    if quant == "none":
        return None
    import_bitsandbytes(verbose)
    from transformers import BitsAndBytesConfig

    if quant == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_enable_fp32_cpu_offload=offload)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype,
        llm_int8_enable_fp32_cpu_offload=offload,
    )


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    quant: str = "8bit",
    device: str = "auto",
    dtype: str = "auto",
    verbose: bool = False,
    attn_implementation: str | None = None,
    device_map: str | None = None,
    max_memory: str | None = None,
    offload_dir: str | Path | None = None,
) -> LoadedModel:
    """Load a checkpoint (OPT, the Llama layout, GPT-2) with its tokenizer, quantized and
    placed as asked.

    ``device_map`` (``auto``, ``balanced``, ``sequential``) hands placement to
    accelerate's big-model inference, across GPUs, the CPU and, with
    ``offload_dir``, the disk; ``max_memory`` caps each device
    (``"cuda:0=10GiB,cpu=30GiB"``). Without it the whole model goes to ``device``.

    Remote code is never trusted; safetensors weights are preferred, and a
    pickle checkpoint is read with ``weights_only`` loading only.
    ``attn_implementation`` (``"eager"`` to get attention weights) goes to
    ``from_pretrained`` only when given; None keeps transformers' default.
    """
    with no_hub_kernels():
        source = resolve_source(spec)
        placement = resolve_placement(device, device_map, max_memory, offload_dir, quant)
        torch_dtype = resolve_dtype(dtype, quant, placement.device)
        quant_config = quantization_config(
            quant, torch_dtype, offload=placement.device_map is not None, verbose=verbose
        )
        config = read_config(source)
        if source.is_local:
            check_safetensors(Path(source.location), source.spec, config)
        with quiet(verbose):
            tokenizer = _load_tokenizer(source)
            model = _load_weights(
                source,
                config,
                torch_dtype=torch_dtype,
                quantization_config=quant_config,
                **placement.from_pretrained_kwargs(),
                **({"attn_implementation": attn_implementation} if attn_implementation else {}),
            )
    model.eval()
    # Nothing here trains: weights that require grad only cost memory, and they make
    # bitsandbytes' in-place bias add fail outside inference_mode.
    model.requires_grad_(False)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=source,
        quant=quant,
        device=placement.label,
        dtype=torch_dtype,
        random_weights=bool(getattr(config, RANDOM_WEIGHTS_KEY, False)),
        settings=LoadSettings(
            spec,
            quant=quant,
            device=device,
            dtype=dtype,
            device_map=device_map,
            max_memory=max_memory,
            offload_dir=None if offload_dir is None else str(offload_dir),
            verbose=verbose,
        ),
    )


def load_from_settings(
    settings: LoadSettings, *, attn_implementation: str | None = None
) -> LoadedModel:
    """Load the model as ``settings`` say (``load_model`` with each of them)."""
    return load_model(
        settings.model,
        quant=settings.quant,
        device=settings.device,
        dtype=settings.dtype,
        verbose=settings.verbose,
        attn_implementation=attn_implementation,
        device_map=settings.device_map,
        max_memory=settings.max_memory,
        offload_dir=settings.offload_dir,
    )


def switch_attention(loaded: LoadedModel, implementation: str | None) -> Callable[[], None] | None:
    """Make the loaded model compute attention as ``implementation`` says (``"eager"``, the
    kind that gives weights), in place; return what switches it back, or None when nothing
    changed (None asked for, or already so)."""
    if implementation is None:
        return None
    current = loaded.model.config._attn_implementation
    if current == implementation:
        return None
    loaded.model.set_attn_implementation(implementation)
    return lambda: loaded.model.set_attn_implementation(current)


def _load_tokenizer(source: ModelSource) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source.location, trust_remote_code=False)
    except (OSError, ValueError) as e:
        if not source.is_local:
            raise ModelError(
                f"cannot load the tokenizer of {source.spec}: it is not in the Hugging Face "
                "cache and the hub could not be reached"
            ) from e
        raise ModelError(f"cannot load the tokenizer of {source.spec}: {first_line(e)}") from e


def _load_weights(source: ModelSource, config: Any, *, torch_dtype: Any, **kwargs: Any) -> Any:
    """``from_pretrained`` of the family's class, with remote code off; checkpoint failures
    become one line."""
    try:
        return model_class(config).from_pretrained(
            source.location, config=config, dtype=torch_dtype, trust_remote_code=False, **kwargs
        )
    except Exception as e:
        known = translate(e)
        if known is not None and not isinstance(known, CheckpointError):
            raise known from e
        if known is None and not isinstance(e, (OSError, ValueError, RuntimeError)):
            raise
        detail = str(known) if known is not None else _describe_load_error(e)
        raise CheckpointError(f"cannot load the weights of {source.spec}: {detail}") from e


def check_safetensors(folder: Path, spec: str, config: Any) -> None:
    """Refuse truncated or corrupt safetensors files and weights that do not fit the config.

    Reads only the file headers, then compares each floating-point tensor's shape
    with what the config builds on the meta device.
    """
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return
    from safetensors import safe_open

    expected = {k: tuple(v.shape) for k, v in build_meta_model(config).state_dict().items()}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as handle:
                shapes = {
                    k: (handle.get_slice(k).get_shape(), handle.get_slice(k).get_dtype())
                    for k in handle.keys()  # noqa: SIM118 (safe_open is not iterable)
                }
        except Exception as e:
            raise CheckpointError(
                f"{path.name} in {spec} is truncated or corrupt: {first_line(e)}"
            ) from e
        for key, (shape, dtype) in shapes.items():
            want = expected.get(key)
            if want is not None and dtype.startswith(("F", "BF")) and tuple(shape) != want:
                raise CheckpointError(
                    f"the weights of {spec} do not match its config: {key} has shape "
                    f"{list(shape)} in {path.name}, the config expects {list(want)}"
                )


def _describe_load_error(error: BaseException) -> str:
    # torch's weights_only refusal arrives as a plain error whose text names it.
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in str(error).lower():
        return PICKLE_REFUSED
    return first_line(error)

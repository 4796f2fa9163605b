"""Resolving a model spec (hub id, folder, ``tiny``), quantization and placement.

Every transformers, bitsandbytes and accelerate choice lives here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ModelError, UsageError
from .placement import (
    DEVICE_MAPS,
    mapped_device,
    parse_max_memory,
    resolve_device,
)

__all__ = [
    "DEFAULT_MODEL",
    "QUANTS",
    "LoadedModel",
    "ModelSource",
    "load_model",
    "quiet",
    "read_config",
    "resolve_device",
    "resolve_source",
]

DEFAULT_MODEL = "facebook/opt-1.3b"
QUANTS = ("8bit", "4bit", "none")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
#: Config key our own generated checkpoints carry so the output can say the weights are random.
RANDOM_WEIGHTS_KEY = "optinspect_random_weights"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: ``location`` is a folder path or a hub id."""

    spec: str
    location: str
    is_local: bool

    @property
    def display(self) -> str:
        return self.spec


@dataclass
class LoadedModel:
    """A model ready to trace, with the choices that produced it."""

    model: nn.Module
    tokenizer: Any
    source: ModelSource
    quant: str
    device: str
    dtype: torch.dtype
    random_weights: bool

    @property
    def name(self) -> str:
        return self.source.display

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def describe(self) -> dict[str, Any]:
        """The fields every result record carries about its model, as keyword arguments."""
        return {
            "model": self.name,
            "quant": self.quant,
            "device": self.device,
            "dtype": self.dtype_name,
            "random_weights": self.random_weights,
        }

    @property
    def max_positions(self) -> int:
        return int(self.model.config.max_position_embeddings)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)


def tiny_path() -> Path:
    """The folder of the built-in tiny checkpoint inside the installed package."""
    return Path(str(resources.files("optinspect") / "data" / "tiny"))


def resolve_source(spec: str) -> ModelSource:
    """Turn ``--model`` into a folder or a hub id, refusing paths that do not exist."""
    if spec == "tiny":
        return ModelSource(spec="tiny", location=str(tiny_path()), is_local=True)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ModelSource(spec=spec, location=str(path), is_local=True)
    if path.exists():
        raise UsageError(f"model path {spec} is a file: give the folder that holds config.json")
    # A hub id is "name" or "org/name"; anything else was meant as a folder.
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise UsageError(f"model folder {spec} does not exist")
    return ModelSource(spec=spec, location=spec, is_local=False)


def read_config(source: ModelSource) -> Any:
    """Read and check the OPT config of ``source`` without touching any weights.

    A folder's ``config.json`` is read as it is. A hub id that names a member of
    the OPT family (``facebook/opt-125m`` ... ``facebook/opt-175b``) gets the
    built-in published config from ``optinspect.model.family`` directly, without asking
    the cache or the hub, so it resolves offline; any other hub id comes from the
    Hugging Face cache or the hub.
    """
    from transformers import OPTConfig

    from .family import family_config

    if source.is_local:
        config_file = Path(source.location) / "config.json"
        if not config_file.is_file():
            raise ModelError(f"model folder {source.spec} has no config.json")
        try:
            raw = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot read {config_file}: {e}") from e
        if not isinstance(raw, dict):
            raise ModelError(f"{config_file} does not hold a JSON object")
    elif (builtin := family_config(source.location)) is not None:
        raw = builtin
    else:
        from transformers import PretrainedConfig

        try:
            with quiet(verbose=False):
                raw, _ = PretrainedConfig.get_config_dict(source.location)
        except (OSError, ValueError) as e:
            raise ModelError(
                f"cannot get the config of {source.spec}: it is not in the Hugging Face "
                "cache and the hub could not be reached or has no such model"
            ) from e
    model_type = raw.get("model_type")
    if model_type != "opt":
        raise ModelError(
            f"{source.spec} is not an OPT model: its config has model_type {model_type!r}"
        )
    return OPTConfig.from_dict(raw)


def resolve_dtype(dtype: str, quant: str, device: str) -> torch.dtype:
    """``auto``: float16 for quantized models and on CUDA, float32 on the CPU."""
    if dtype != "auto":
        if dtype not in DTYPES:
            raise UsageError(f"unknown dtype {dtype!r}: use auto, {', '.join(DTYPES)}")
        return DTYPES[dtype]
    if quant != "none" or device.startswith("cuda"):
        return torch.float16
    return torch.float32


def quantization_config(quant: str, dtype: torch.dtype, *, offload: bool = False) -> Any:
    """The BitsAndBytesConfig for ``quant``, or None for full precision.

    4-bit layers compute in ``dtype``. With ``offload`` (a device map that may put
    modules on the CPU or disk) those modules stay unquantized in float32, as
    bitsandbytes requires.
    """
    if quant not in QUANTS:
        raise UsageError(f"unknown quantization {quant!r}: use {', '.join(QUANTS)}")
    if quant == "none":
        return None
    from transformers import BitsAndBytesConfig

    if quant == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_enable_fp32_cpu_offload=offload)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=dtype,
        llm_int8_enable_fp32_cpu_offload=offload,
    )


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """Keep third-party warnings, log lines and progress bars out of the output."""
    if verbose:
        yield
        return
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    progress_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    disable_progress_bars()
    previous_disable = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous_disable)
        hf_logging.set_verbosity(level)
        if progress_was_on:
            hf_logging.enable_progress_bar()
            enable_progress_bars()


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
    """Load an OPT checkpoint with its tokenizer, quantized and placed as asked.

    ``device_map`` (``auto``, ``balanced``, ``sequential``) hands placement to
    accelerate's big-model inference, across GPUs, the CPU and, with
    ``offload_dir``, the disk; ``max_memory`` caps each device
    (``"cuda:0=10GiB,cpu=30GiB"``). Without it the whole model goes to ``device``.

    Remote code is never trusted; safetensors weights are preferred, and a
    pickle checkpoint is read with ``weights_only`` loading only.
    ``attn_implementation`` (``"eager"`` to get attention weights) goes to
    ``from_pretrained`` only when given; None keeps transformers' default.
    """
    source = resolve_source(spec)
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise UsageError(f"unknown device map {device_map!r}: use {', '.join(DEVICE_MAPS)}")
    memory = parse_max_memory(max_memory) if max_memory is not None else None
    if (memory is not None or offload_dir is not None) and device_map is None:
        device_map = "auto"
    device = resolve_device(device) if device_map is None else mapped_device()
    torch_dtype = resolve_dtype(dtype, quant, device)
    quant_config = quantization_config(quant, torch_dtype, offload=device_map is not None)
    config = read_config(source)
    if source.is_local:
        check_safetensors(Path(source.location), source.spec, config)
    placement: dict[str, Any] = {"device_map": device_map or {"": device}}
    if memory is not None:
        placement["max_memory"] = memory
    if offload_dir is not None:
        placement["offload_folder"] = str(offload_dir)

    from transformers import AutoTokenizer, OPTForCausalLM

    attn_kwargs: dict[str, Any] = {}
    if attn_implementation is not None:
        attn_kwargs["attn_implementation"] = attn_implementation
    with quiet(verbose):
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.location, trust_remote_code=False)
        except (OSError, ValueError) as e:
            if not source.is_local:
                raise ModelError(
                    f"cannot load the tokenizer of {source.spec}: it is not in the Hugging Face "
                    "cache and the hub could not be reached"
                ) from e
            raise ModelError(f"cannot load the tokenizer of {source.spec}: {_first_line(e)}") from e
        try:
            model = OPTForCausalLM.from_pretrained(
                source.location,
                config=config,
                dtype=torch_dtype,
                quantization_config=quant_config,
                **placement,
                trust_remote_code=False,
                **attn_kwargs,
            )
        except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as e:
            if isinstance(e, torch.cuda.OutOfMemoryError):
                raise
            raise CheckpointError(
                f"cannot load the weights of {source.spec}: {_describe_load_error(e)}"
            ) from e
        except Exception as e:
            if type(e).__name__ != "SafetensorError":
                raise
            raise CheckpointError(
                f"cannot load the weights of {source.spec}: {_first_line(e)}"
            ) from e
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=source,
        quant=quant,
        device=device if device_map is None else f"map:{device_map}",
        dtype=torch_dtype,
        random_weights=bool(getattr(config, RANDOM_WEIGHTS_KEY, False)),
    )


def check_safetensors(folder: Path, spec: str, config: Any) -> None:
    """Refuse truncated or corrupt safetensors files and weights that do not fit the config.

    Reads only the file headers, then compares each floating-point tensor's shape
    with what the config builds on the meta device.
    """
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return
    from safetensors import safe_open
    from transformers import OPTForCausalLM

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in OPTForCausalLM(config).state_dict().items()}
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as handle:
                shapes = {
                    k: (handle.get_slice(k).get_shape(), handle.get_slice(k).get_dtype())
                    for k in handle.keys()  # noqa: SIM118 (safe_open is not iterable)
                }
        except Exception as e:
            raise CheckpointError(
                f"{path.name} in {spec} is truncated or corrupt: {_first_line(e)}"
            ) from e
        for key, (shape, dtype) in shapes.items():
            want = expected.get(key)
            if want is not None and dtype.startswith(("F", "BF")) and tuple(shape) != want:
                raise CheckpointError(
                    f"the weights of {spec} do not match its config: {key} has shape "
                    f"{list(shape)} in {path.name}, the config expects {list(want)}"
                )


def _describe_load_error(error: BaseException) -> str:
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in text.lower():
        return "its pickle checkpoint holds more than tensors, so it was refused unread"
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]

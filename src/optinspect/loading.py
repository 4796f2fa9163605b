"""Resolving a model spec (hub id, folder, ``tiny``), quantization and placement.

Every transformers, bitsandbytes and accelerate choice lives here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, ModelError, UsageError

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
    """Read and check the OPT config of ``source`` without touching any weights."""
    from transformers import OPTConfig

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


def resolve_device(device: str) -> str:
    """``auto`` means CUDA when present, else the CPU; explicit devices are checked."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    match = re.fullmatch(r"cuda(?::(\d+))?", device)
    if not match:
        raise UsageError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UsageError(f"device {device} was asked for, but CUDA is not available here")
    if match.group(1) is not None and int(match.group(1)) >= torch.cuda.device_count():
        raise UsageError(
            f"device {device} does not exist: this machine has {torch.cuda.device_count()} GPU(s)"
        )
    return device


def resolve_dtype(dtype: str, quant: str, device: str) -> torch.dtype:
    """``auto``: float16 for quantized models and on CUDA, float32 on the CPU."""
    if dtype != "auto":
        if dtype not in DTYPES:
            raise UsageError(f"unknown dtype {dtype!r}: use auto, {', '.join(DTYPES)}")
        return DTYPES[dtype]
    if quant != "none" or device.startswith("cuda"):
        return torch.float16
    return torch.float32


def quantization_config(quant: str, dtype: torch.dtype) -> Any:
    """The BitsAndBytesConfig for ``quant``, or None for full precision."""
    if quant not in QUANTS:
        raise UsageError(f"unknown quantization {quant!r}: use {', '.join(QUANTS)}")
    if quant == "none":
        return None
    from transformers import BitsAndBytesConfig

    if quant == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
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
) -> LoadedModel:
    """Load an OPT checkpoint with its tokenizer, quantized and placed as asked.

    Remote code is never trusted; safetensors weights are preferred, and a
    pickle checkpoint is read with ``weights_only`` loading only.
    """
    source = resolve_source(spec)
    quant_config = quantization_config(quant, torch.float16)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, quant, device)
    if quant == "4bit":
        quant_config = quantization_config(quant, torch_dtype)
    config = read_config(source)

    from transformers import AutoTokenizer, OPTForCausalLM

    with quiet(verbose):
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.location, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot load the tokenizer of {source.spec}: {_first_line(e)}") from e
        try:
            model = OPTForCausalLM.from_pretrained(
                source.location,
                config=config,
                dtype=torch_dtype,
                device_map={"": device},
                quantization_config=quant_config,
                trust_remote_code=False,
            )
        except (OSError, ValueError, RuntimeError) as e:
            if isinstance(e, torch.cuda.OutOfMemoryError):
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
        device=device,
        dtype=torch_dtype,
        random_weights=bool(getattr(config, RANDOM_WEIGHTS_KEY, False)),
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]

"""What ``--model`` names, resolved without reading a weight: a folder, a hub id, ``tiny`` or
``tiny-llama``, and its checked config (of a family in ``model.families``).

    source = resolve_source("facebook/opt-1.3b")
    config = read_config(source)          # the built-in family config, offline

Also the model built on the meta device from a config: module names and
shapes with no memory and no weights.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ModelError, UsageError, os_reason
from .families import adapter_for_config, adapter_for_type, supported_text
from .quiet import quiet

__all__ = [
    "BUILTIN",
    "RANDOM_WEIGHTS_KEY",
    "ModelSource",
    "build_meta_model",
    "config_from_raw",
    "model_class",
    "read_config",
    "read_raw_config",
    "resolve_source",
    "tiny_path",
]

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


#: The built-in checkpoints, by the ``--model`` name that picks them: their folder in data/.
BUILTIN = {"tiny": "tiny", "tiny-llama": "tiny_llama"}


def tiny_path(name: str = "tiny") -> Path:
    """The folder of a built-in tiny checkpoint (``tiny``, ``tiny-llama``) in the package."""
    return Path(str(resources.files("optinspect") / "data" / BUILTIN[name]))


def local_folder(spec: str) -> Path | None:
    """The folder ``--model`` names (``~`` expanded), or None: ``tiny``, a hub id, or a
    path with no folder there (or none this user can see: ``resolve_source`` says why)."""
    if spec in BUILTIN or not spec.strip():
        return None
    path = Path(spec).expanduser()
    try:
        return path if path.is_dir() else None
    except OSError:
        return None


def resolve_source(spec: str) -> ModelSource:
    """Turn ``--model`` into a folder or a hub id, refusing paths that do not exist."""
    if not spec.strip():
        raise UsageError("--model is empty: give a hub id, a folder, tiny or tiny-llama")
    if spec in BUILTIN:
        return ModelSource(spec=spec, location=str(tiny_path(spec)), is_local=True)
    folder = local_folder(spec)
    if folder is not None:
        return ModelSource(spec=spec, location=str(folder), is_local=True)
    path = Path(spec).expanduser()
    try:
        exists = path.exists()
    except OSError as e:  # a folder on the way that this user cannot enter
        raise UsageError(f"cannot read model folder {spec}: {os_reason(e)}") from e
    if exists:
        raise UsageError(f"model path {spec} is a file: give the folder that holds config.json")
    # A hub id is "name" or "org/name"; anything else was meant as a folder.
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise UsageError(f"model folder {spec} does not exist")
    return ModelSource(spec=spec, location=spec, is_local=False)


def read_config(source: ModelSource) -> Any:
    """The checked config (``OPTConfig``, ``LlamaConfig``, ...) of ``source``, reading no
    weight (see ``read_raw_config``)."""
    return config_from_raw(read_raw_config(source))


def config_from_raw(raw: dict[str, Any]) -> Any:
    """The transformers config of a raw config ``read_raw_config`` read (a preflight
    plan's): the class its ``model_type`` names (``OPTConfig`` when it names none)."""
    from transformers import AutoConfig, OPTConfig

    model_type = raw.get("model_type")
    if model_type is None or model_type == "opt":
        return OPTConfig.from_dict(raw)
    return AutoConfig.for_model(model_type).from_dict(raw)


def read_raw_config(source: ModelSource) -> dict[str, Any]:
    """Read and check the OPT config of ``source`` as a plain dict, without torch.

    A folder's ``config.json`` is read as it is. A hub id that names a member of
    the OPT family (``facebook/opt-125m`` ... ``facebook/opt-175b``) gets the
    built-in published config from ``optinspect.model.family`` directly, without asking
    the cache or the hub, so it resolves offline; any other hub id comes from the
    Hugging Face cache or the hub (through transformers, which imports torch).
    Every check that a config alone decides runs here, so its errors come back
    as fast as Python starts.
    """
    from .family import family_config

    if source.is_local:
        config_file = Path(source.location) / "config.json"
        try:
            found = config_file.is_file()
            raw = json.loads(config_file.read_text(encoding="utf-8")) if found else None
        except PermissionError as e:  # a folder or file of another user's
            raise UsageError(f"cannot read model folder {source.spec}: {os_reason(e)}") from e
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot read {config_file}: {e}") from e
        if not found:
            raise ModelError(f"model folder {source.spec} has no config.json")
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
    if model_type is None:
        raise ModelError(
            f"{source.spec} is not a model optinspect supports: its config has no model_type "
            f"(supported: {supported_text()})"
        )
    if adapter_for_type(model_type) is None:
        raise ModelError(
            f"{source.spec} is not a model optinspect supports: its config has model_type "
            f"{model_type!r} (supported: {supported_text()})"
        )
    _check_shapes(source.spec, raw)
    return raw


def _check_shapes(spec: str, raw: dict[str, Any]) -> None:
    """Sizes the model cannot be built with, named before transformers fails on them."""
    from .family import config_value

    try:
        sizes = {
            key: int(config_value(raw, key))
            for key in (
                "hidden_size",
                "num_attention_heads",
                "num_hidden_layers",
                "vocab_size",
                "max_position_embeddings",
                "ffn_dim",
            )
        }
    except (TypeError, ValueError) as e:
        raise ModelError(f"the config of {spec} cannot be built: {e}") from e
    hidden, heads = sizes["hidden_size"], sizes["num_attention_heads"]
    if heads < 1 or hidden % heads:
        raise ModelError(
            f"the config of {spec} cannot be built: hidden_size {hidden} is not a multiple "
            f"of num_attention_heads {heads}"
        )
    kv_heads = config_value(raw, "num_key_value_heads") if raw.get("model_type") else None
    if kv_heads is not None and (int(kv_heads) < 1 or heads % int(kv_heads)):
        raise ModelError(
            f"the config of {spec} cannot be built: num_attention_heads {heads} is not a "
            f"multiple of num_key_value_heads {kv_heads}"
        )
    for key in ("num_hidden_layers", "vocab_size", "max_position_embeddings", "ffn_dim"):
        if sizes[key] < 1:
            raise ModelError(f"the config of {spec} cannot be built: {key} is below 1")


def model_class(config: Any) -> Any:
    """The transformers CausalLM class of ``config``, as its family adapter names it."""
    import transformers

    return getattr(transformers, adapter_for_config(config).class_name(config.to_dict()))


def build_meta_model(config: Any, dtype: Any = None) -> Any:
    """The model ``config`` builds (``OPTForCausalLM``, ``LlamaForCausalLM``, ...), its
    parameters on the meta device (no memory, no init)."""
    import torch

    with torch.device("meta"), quiet(verbose=False):
        model = model_class(config)(config)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()

"""How a model is to be loaded: the settings every loading option sets, as one plain record.

    settings = LoadSettings("tiny", quant="none", device="cpu")
    loaded = load_from_settings(settings)         # optinspect.model.loading
    settings.settings()                           # what makes two loads the same model

The CLI's loading options are these settings (``commands.options.LoadOptions``), a job
carries them to a server, and preflight judges them before anything loads. No torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import UsageError

__all__ = ["DEFAULT_MODEL", "LoadSettings", "check_quant_dtype"]

#: The model every command loads when none is named.
DEFAULT_MODEL = "facebook/opt-1.3b"


@dataclass(frozen=True)
class LoadSettings:
    """How to load the model: which one, quantized and placed how, and whether third-party
    output is shown (``verbose``)."""

    model: str = DEFAULT_MODEL
    quant: str = "8bit"
    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None
    max_memory: str | None = None
    offload_dir: str | None = None
    verbose: bool = False

    def settings(self) -> dict[str, str | None]:
        """What makes two loads the same model: every setting but the display ones.

        A local folder is named by its absolute path, so a server started elsewhere
        matches it.
        """
        from .spec import local_folder

        folder = local_folder(self.model)
        model = os.path.abspath(folder) if folder is not None else self.model
        offload = os.path.abspath(os.path.expanduser(d)) if (d := self.offload_dir) else None
        return {
            "model": model,
            "quant": self.quant,
            "device": self.device,
            "dtype": self.dtype,
            "device_map": self.device_map,
            "max_memory": self.max_memory,
            "offload_dir": offload,
        }


def check_quant_dtype(quant: str, dtype: str) -> None:
    """LLM.int8 layers compute in float16 whatever the model's dtype (bitsandbytes casts
    their inputs), so another explicit dtype would be reported but not used."""
    if quant == "8bit" and dtype in ("float32", "bfloat16"):
        raise UsageError(
            f"--quant 8bit computes in float16, not {dtype}: use --dtype auto or float16, "
            f"or --quant 4bit or none for {dtype}"
        )

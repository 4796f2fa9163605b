"""The calibration records: what was asked, each linear layer's input and each module's
output over the corpus, and the histogram layout they were read from.

``CalibrationResult`` also holds the per-channel tensors and builds the files
quantization tools read (SmoothQuant's act_scales, OmniQuant's act_shifts, the
full safetensors dump); only those methods import torch, when called.
``optinspect.analyses.calibrate`` collects the statistics and describes the histogram.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .records import SCHEMA_VERSION, DescribesModel, ModelInfo, TensorStats

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHANNEL_STATS",
    "HIST_BINS",
    "PERCENTILE_ERROR",
    "SUB_BITS",
    "CalibrationResult",
    "CalibrationSettings",
    "LinearInput",
    "ModuleOutput",
    "metadata_text",
]

#: Mantissa bits kept in a histogram bin: 16 bins per power of two.
SUB_BITS = 4
_SHIFT = 23 - SUB_BITS
#: Bins of the |x| histogram: every non-negative float32 bit pattern >> 19.
HIST_BINS = 1 << (31 - _SHIFT)
#: Relative error bound of a percentile read from the histogram (normal floats).
PERCENTILE_ERROR = 1 / (1 << (SUB_BITS + 1))
#: Per-channel statistics in the --out file, in this order.
CHANNEL_STATS = ("absmax", "min", "max", "mean_abs", "mean", "sum_squares")


def metadata_text(value: str | int | float | bool) -> str:
    """A value as the metadata of a safetensors file holds it (strings only): booleans are
    ``true`` and ``false``, as in JSON, in every file optinspect writes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class CalibrationSettings:
    """What the run was asked to do; recorded in the JSON and the file metadata."""

    file: str | None = None
    field: str | None = None
    samples: int | None = None  # --samples: how many were asked for; None is all
    seed: int = 42
    seq_len: int | None = None
    pack: bool = False
    batch_size: int = 8
    truncate: bool = False
    allow_fewer: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LinearInput:
    """The input of one linear layer over the whole calibration set."""

    name: str
    type: str
    layer: int | None
    in_features: int
    tokens: int
    absmax: float | None  # the largest |x| over every channel; None when not finite
    argmax: int | None  # the channel that holds it
    median: float | None  # the median over channels of each channel's max |x| (lower middle)
    outlier_ratio: float | None  # absmax / median; None when the median is 0
    mean_abs: float | None  # mean |x| over every element
    percentiles: dict[str, float | None]  # of |x| over every element, from the histogram

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModuleOutput:
    """One module's output over every real token of the calibration set."""

    name: str
    type: str
    layer: int | None
    stats: TensorStats

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "layer": self.layer, **self.stats.as_dict()}


@dataclass(frozen=True)
class CalibrationResult(DescribesModel):
    """What ``calibrate`` found; ``channels`` holds the per-channel tensors (on the CPU)
    keyed ``MODULE/STAT``, which the JSON leaves out and the files carry."""

    info: ModelInfo
    settings: CalibrationSettings
    samples: int
    tokens: int
    world_size: int
    inputs: tuple[LinearInput, ...]
    outputs: tuple[ModuleOutput, ...]
    channels: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)

    @property
    def quantized(self) -> bool:
        """The statistics come from a quantized model, not the full-precision one."""
        return self.info.quant != "none"

    def act_scales(self) -> dict[str, torch.Tensor]:
        """SmoothQuant's act_scales: full module name -> max |x| per input channel,
        1-D float32 on the CPU."""
        return {m.name: self.channels[f"{m.name}/absmax"].clone() for m in self.inputs}

    def act_shifts(self) -> dict[str, torch.Tensor]:
        """OmniQuant's act_shifts: (max + min) / 2 per input channel, exact over the set."""
        import torch

        return {
            m.name: ((self.channels[f"{m.name}/max"] + self.channels[f"{m.name}/min"]) / 2)
            .to(torch.float32)
            .clone()
            for m in self.inputs
        }

    def scale_curves(self, points: int = 201) -> dict[str, list[float | None]]:
        """Each linear input's act_scales sorted from the largest down, read at ``points``
        evenly spaced shares of its channels (the first is its max |x|, the last its
        least), for a picture; a value that is not finite is None. Empty where the record
        holds no per-channel values (one rebuilt from JSON)."""
        curves: dict[str, list[float | None]] = {}
        for m in self.inputs:
            scales = self.channels.get(f"{m.name}/absmax")
            if scales is None or scales.numel() == 0:
                continue
            import torch

            ordered = scales.to(torch.float64).sort(descending=True).values
            at = torch.linspace(0, ordered.numel() - 1, points).round().long()
            curves[m.name] = [v if math.isfinite(v) else None for v in ordered[at].tolist()]
        return curves

    def metadata(self) -> dict[str, str]:
        """The --out file's metadata: strings only, as safetensors requires; booleans are
        ``true`` and ``false``."""
        import json

        return {
            "format": "pt",
            "schema": str(SCHEMA_VERSION),
            **{k: metadata_text(v) for k, v in self.info.as_dict().items()},
            "quantized": metadata_text(self.quantized),
            "settings": json.dumps(self.settings.as_dict()),
            "samples": str(self.samples),
            "tokens": str(self.tokens),
            "seed": str(self.settings.seed),
            "world_size": str(self.world_size),
            "channel_stats": ",".join(CHANNEL_STATS),
            "output_stats": ",".join(TensorStats.__dataclass_fields__),
            "histogram": f"{HIST_BINS} bins of float32 |x|: bits >> {_SHIFT}",
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every statistic keyed ``MODULE/STAT`` for the --out file: the per-channel
        ones, ``tokens`` and ``histogram`` per linear input, ``output`` per module
        (a float64 vector in ``output_stats`` order)."""
        import torch

        out = {key: value.clone() for key, value in self.channels.items()}
        for m in self.outputs:
            values = [math.nan if v is None else float(v) for v in m.stats.as_dict().values()]
            out[f"{m.name}/output"] = torch.tensor(values, dtype=torch.float64)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            **self.info.as_dict(),
            "quantized": self.quantized,
            "settings": self.settings.as_dict(),
            "samples": self.samples,
            "tokens": self.tokens,
            "world_size": self.world_size,
            "histogram": {
                "bins": HIST_BINS,
                "bins_per_octave": 1 << SUB_BITS,
                "percentile_relative_error": PERCENTILE_ERROR,
            },
            "modules": [m.as_dict() for m in self.inputs],
            "outputs": [o.as_dict() for o in self.outputs],
        }

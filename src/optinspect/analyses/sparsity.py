"""ReLU sparsity of the feed-forward blocks, aggregated over every token traced.

OPT's ``activation_fn`` is a ReLU, so many of its outputs are exactly zero. The
tracker hooks each layer's ``activation_fn`` for the duration of a ``with``
block and keeps, per layer, on the device: how many outputs were zero and which
units were non-zero for at least one token. Padding positions are left out.
Nothing comes to the host until ``summary()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ..engine.batch import Batch, BatchLayout
from ..engine.collect import NO_KWARGS
from ..engine.hooks import HookGroup
from ..model.names import ACTIVATION, layer_of, role_of
from ..results.sparsity import LayerSparsity

__all__ = ["FfnSparsity", "LayerSparsity"]


class FfnSparsity(HookGroup):
    """Hooks every ``model.decoder.layers.N.activation_fn`` inside its ``with`` block.

    It is its own collector (``engine.collect``): it counts as batches run, and its one
    result, ``summary()``, comes after the last.
    """

    forward_kwargs: ClassVar[Mapping[str, Any]] = NO_KWARGS

    def __init__(self, model: nn.Module, layers: Sequence[int] | None = None) -> None:
        """Track ``layers`` (indices), or every decoder layer when None."""
        super().__init__()
        wanted = set(layers) if layers is not None else None
        self._targets = [
            (layer, module)
            for name, module in model.named_modules()
            if role_of(name) == ACTIVATION
            and (layer := layer_of(name)) is not None
            and (wanted is None or layer in wanted)
        ]
        self._layout: BatchLayout | None = None
        self._nonzero: dict[int, torch.Tensor] = {}
        self._alive: dict[int, torch.Tensor] = {}
        self._tokens = 0

    def _register(self) -> None:
        for layer, module in self._targets:
            self._keep(module.register_forward_hook(self._make_hook(layer)))

    def begin(self, batch: Batch) -> None:
        """Start a batch; only its real (unpadded) tokens count."""
        self._layout = batch.layout if batch.size > 1 else None
        self._tokens += batch.real_tokens

    def _make_hook(self, layer: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor) or output.device.type == "meta":
                return
            layout = self._layout
            if layout is not None and layout.valid is not None:
                x = output.reshape(layout.batch, layout.tokens, -1)
                nonzero = (x != 0) & layout.valid.to(x.device)[:, :, None]
                alive = nonzero.any(dim=1).any(dim=0)
            else:
                nonzero = output.reshape(-1, output.shape[-1]) != 0
                alive = nonzero.any(dim=0)
            count = nonzero.sum(dtype=torch.float64)
            if layer in self._nonzero:
                self._nonzero[layer] += count
                self._alive[layer] |= alive
            else:
                self._nonzero[layer] = count
                self._alive[layer] = alive

        return hook

    def groups(self) -> list[FfnSparsity]:
        return [self]

    def finish(self, batch: Batch, output: Any) -> None:
        """Nothing per batch: the counts stay on the device until ``summary()``."""

    def summary(self) -> list[LayerSparsity]:
        """Per layer, in order; one transfer to the host for all layers."""
        layers = sorted(self._nonzero)
        if not layers or self._tokens == 0:
            return []
        nonzero = torch.stack([self._nonzero[i].cpu() for i in layers]).tolist()
        dead = torch.stack([(~self._alive[i]).sum().cpu() for i in layers]).tolist()
        units = [int(self._alive[i].numel()) for i in layers]
        return [
            LayerSparsity(
                layer=layer,
                zeros=1.0 - nz / (self._tokens * u),
                dead=int(d),
                units=u,
                tokens=self._tokens,
            )
            for layer, nz, d, u in zip(layers, nonzero, dead, units, strict=True)
        ]

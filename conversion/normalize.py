"""Threshold balancing: one forward pass over calibration data sets each layer's activation scale.

The scale ``lambda`` of an activation becomes the threshold of the IF neurons replacing it (an IF
neuron with threshold ``lambda`` fires at rate ``a / lambda`` for a constant input ``a``). Choices
(the ``norm`` string):

- ``"max"``: the largest activation of the layer (Diehl et al. 2015);
- ``"percentile:p"`` (default ``p = 99.9``): the p-th percentile of all the layer's activation values,
  zeros included, which ignores rare outliers (Rueckauer et al. 2017);
- ``"channel:p"`` (default ``p = 99.9``; ``"channel:100"`` is the max): one scale per channel
  (Kim et al. 2020, Spiking-YOLO).

A channel (or layer) whose percentile is zero falls back to its max, one that never fired to the
layer scale (or 1.0). QCFS activations bring their trained threshold and are not measured.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import fx
from torch.utils.data import DataLoader, Dataset, TensorDataset

from spikec.conversion.prepare import activation_nodes
from spikec.conversion.qcfs import QCFS
from spikec.errors import UsageError

DEFAULT_PERCENTILE = 99.9


@dataclass(frozen=True)
class NormSpec:
    """How activation scales are measured: per layer or per channel, at which percentile (100 = max)."""

    per_channel: bool = False
    percentile: float = DEFAULT_PERCENTILE

    @classmethod
    def parse(cls, text: "str | NormSpec") -> "NormSpec":
        """``"max"``, ``"percentile[:p]"`` or ``"channel[:p]"``."""
        if isinstance(text, NormSpec):
            return text
        name, _, value = str(text).strip().partition(":")
        if name == "max" and not value:
            return cls(False, 100.0)
        if name not in ("percentile", "channel"):
            raise UsageError(f"norm must be 'max', 'percentile[:p]' or 'channel[:p]', got {text!r}")
        try:
            p = float(value) if value else DEFAULT_PERCENTILE
        except ValueError:
            raise UsageError(f"norm {text!r}: the percentile must be a number") from None
        if not 0.0 < p <= 100.0:
            raise UsageError(f"norm {text!r}: the percentile must lie in (0, 100]")
        return cls(name == "channel", p)

    def __str__(self) -> str:
        if not self.per_channel and self.percentile == 100.0:
            return "max"
        return f"{'channel' if self.per_channel else 'percentile'}:{self.percentile:g}"


def calibration_batches(data, batch_size: int = 256, limit: int | None = None) -> Iterator[torch.Tensor]:
    """Input batches from a tensor, a (Tensor)Dataset, a DataLoader or an iterable of batches.

    Labels are dropped; at most ``limit`` samples are produced.
    """
    seen = 0
    for batch in _raw_batches(data, batch_size):
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if limit is not None:
            if seen >= limit:
                return
            batch = batch[: limit - seen]
        seen += batch.shape[0]
        yield batch


def _raw_batches(data, batch_size: int) -> Iterable:
    if isinstance(data, torch.Tensor):
        return data.split(batch_size)
    if isinstance(data, TensorDataset):
        return data.tensors[0].split(batch_size)
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size, shuffle=False)
    if isinstance(data, Iterable):
        return data
    raise UsageError(f"calibration data must be a tensor, a dataset or a data loader, got {type(data).__name__}")


RAW_BUDGET = 1 << 24  # activation values of one layer kept as they are before reducing them to top candidates


class _Collector:
    """Statistics of one activation's outputs over the calibration batches.

    For a percentile the hook only keeps the outputs; :meth:`scale` takes the top values of each
    batch (:func:`top_values`) and then of all of them. If the kept outputs grow past
    :data:`RAW_BUDGET` values and the sample count is known, they are reduced early to the values
    that can still be among the top ``(100 - p)`` percent of all values.
    """

    def __init__(self, spec: NormSpec, total_samples: int | None):
        self.spec, self.total_samples = spec, total_samples
        self.maximum: torch.Tensor | None = None
        self.raw: list[torch.Tensor] = []
        self.raw_values = 0
        self.candidates: list[torch.Tensor] = []
        self.count = 0  # values per row (per channel, or per layer)
        self.sample_ndim = 0

    def __call__(self, module, inputs, output) -> None:
        out = output.detach()
        self.sample_ndim = out.dim() - 1
        self.count += out.numel() // (out.shape[1] if self.spec.per_channel else 1)
        if self.spec.percentile >= 100.0:
            peak = out.transpose(0, 1).reshape(out.shape[1], -1).amax(1) if self.spec.per_channel else out.amax().view(1)
            self.maximum = peak if self.maximum is None else torch.maximum(self.maximum, peak)
            return
        self.raw.append(out)
        self.raw_values += out.numel()
        if self.raw_values > RAW_BUDGET and self.total_samples is not None:
            per_sample = self.raw_values / sum(o.shape[0] for o in self.raw) / (out.shape[1] if self.spec.per_channel else 1)
            keep = math.ceil((1.0 - self.spec.percentile / 100.0) * self.total_samples * per_sample) + 2
            self.candidates += [top_values(o, keep, self.spec.per_channel) for o in self.raw]
            self.raw, self.raw_values = [], 0

    def scale(self) -> torch.Tensor:
        if self.count == 0:
            raise UsageError("calibration data is empty")
        if self.spec.percentile >= 100.0:
            lam = self.maximum.float()
        else:
            rank = self.count - int(round(self.spec.percentile / 100.0 * (self.count - 1)))  # from the top, 1-based
            rows = torch.cat(self.candidates + [top_values(o, rank, self.spec.per_channel) for o in self.raw], 1)
            top = rows.topk(min(rank, rows.shape[1]), dim=1).values.float()
            lam, peak = top[:, -1], top[:, 0]
            lam = torch.where(lam > 0, lam, peak)
        layer = float(lam.max()) if bool((lam > 0).any()) else 1.0
        lam = torch.where(lam > 0, lam, torch.full_like(lam, layer))
        if not self.spec.per_channel:
            return lam.reshape(())
        return lam.reshape(-1, *([1] * (self.sample_ndim - 1)))


def top_values(out: torch.Tensor, k: int, per_channel: bool, block: int = 64) -> torch.Tensor:
    """The ``k`` largest values of a batch output ``[B, C, ...]``: ``[1, k]``, or ``[C, k]`` per channel.

    Blocks first: the ``k`` largest values all lie in the ``k`` blocks with the largest maxima
    (any value in another block is at most the k-th largest block maximum, and those ``k`` maxima
    are values too), and block maxima are cheap. Blocks are runs of ``block`` values, or per
    channel one sample's map of that channel.
    """
    if per_channel:
        x = out.reshape(out.shape[0], out.shape[1], -1)
        if x.shape[2] > 1 and x.shape[0] > k:
            chosen = x.amax(2).topk(k, dim=0).indices  # [k, C]
            x = x.gather(0, chosen.unsqueeze(-1).expand(k, x.shape[1], x.shape[2]))
        rows = x.transpose(0, 1).reshape(x.shape[1], -1)
    else:
        flat = out.reshape(1, -1)
        blocks = flat.shape[1] // block
        if blocks > 2 * k:
            main = flat[:, : blocks * block].reshape(blocks, block)
            chosen = main.amax(1).topk(k).indices
            rows = torch.cat([main[chosen].reshape(1, -1), flat[:, blocks * block:]], 1)
        else:
            rows = flat
    return rows.topk(min(k, rows.shape[1]), dim=1, sorted=False).values


def _sample_count(data, limit: int | None) -> int | None:
    """How many samples calibration will see, when the data says so up front."""
    if isinstance(data, torch.Tensor):
        n = data.shape[0]
    elif isinstance(data, DataLoader):
        n = len(data.dataset) if hasattr(data.dataset, "__len__") else None
    elif isinstance(data, Dataset) and hasattr(data, "__len__"):
        n = len(data)
    else:
        n = None
    if n is None:
        return None
    return n if limit is None else min(n, limit)


@torch.no_grad()
def calibrate(prepared: fx.GraphModule, data, norm: "str | NormSpec" = "percentile",
              batch_size: int = 256, limit: int | None = None) -> dict[str, torch.Tensor]:
    """Activation scale of every activation call site of a prepared graph, keyed by its module path.

    One forward pass over the calibration data. QCFS layers report their trained threshold.
    """
    spec = NormSpec.parse(norm)
    modules = dict(prepared.named_modules())
    collectors: dict[str, _Collector] = {}
    total = _sample_count(data, limit)
    handles = []
    for node in activation_nodes(prepared):
        if isinstance(modules[node.target], QCFS):
            continue
        collectors[node.target] = _Collector(spec, total)
        handles.append(modules[node.target].register_forward_hook(collectors[node.target]))
    try:
        prepared.eval()
        for batch in calibration_batches(data, batch_size, limit):
            prepared(batch)
    finally:
        for h in handles:
            h.remove()
    scales = {name: c.scale() for name, c in collectors.items()}
    for node in activation_nodes(prepared):
        m = modules[node.target]
        if isinstance(m, QCFS):
            scales[node.target] = m.threshold.detach().float().abs().reshape(())
    return scales


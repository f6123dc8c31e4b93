"""How many crossbar tiles a network occupies, before and after compression.

For a TTFS network (what ``spikec.hardware`` maps) the count is the PE's own: every layer of
:func:`spikec.hardware.extract.pe_program` programmed by
:func:`spikec.hardware.crossbar.program_crossbar`, which leaves out all-zero rows and tiles that
hold no nonzero cell. For any other network it is the same layout applied to each Conv/Linear
weight unrolled to ``[K, rows]`` (plus one bias row when the layer has a bias; no ramp rows):
all-zero rows dropped, then the tiles of ``tile_rows`` x ``config.neurons_per_tile`` (which
counts ``cells_per_weight``) that hold a nonzero weight, by the PE's own ``tile_sparse``. ``dense`` counts every tile
of the layout (for the PE: of the rows it kept). Tiles *freed* by a compression are the
uncompressed network's tiles minus the compressed network's (:func:`tiles_freed`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from spikec.compress.layers import synaptic_layers


@dataclass(frozen=True)
class TileCount:
    dense: int
    occupied: int
    layers: dict = field(default_factory=dict)  # name -> (dense, occupied)
    source: str = "weights"  # "pe" (the PE's own mapping) or "weights" (the layout on the weight matrices)
    exact: dict = field(default_factory=dict)  # "pe" only: name -> the weights sit on the cell grid (no rounding)

    @property
    def freed(self) -> int:
        return self.dense - self.occupied

    def summary(self) -> dict:
        return {"dense_tiles": self.dense, "tiles": self.occupied, "tiles_freed": self.freed,
                "freed_fraction": self.freed / max(self.dense, 1), "source": self.source,
                "layers": {n: {"dense_tiles": d, "tiles": o} for n, (d, o) in self.layers.items()},
                "on_cell_grid": dict(self.exact)}


def weight_tiles(weight: torch.Tensor, has_bias: bool, config) -> tuple[int, int]:
    """``(dense, occupied)`` tiles of one weight on ``config``'s tiles (see the module docstring),
    laid out by the PE's own :func:`~spikec.hardware.mapping.tile_layer` and
    :func:`~spikec.hardware.mapping.tile_sparse` (one copy: a weight alone has no conv positions)."""
    from spikec.hardware.mapping import tile_layer, tile_sparse

    w = weight.detach().reshape(weight.shape[0], -1)
    K, rows = w.shape
    extra = 1 if has_bias else 0
    layout = tile_layer(rows + extra, K, config)
    dense = layout.row_tiles * layout.col_tiles
    nz = (w != 0).t()  # [rows, K]
    nz = nz[nz.any(1)]
    if extra:
        nz = torch.cat([nz, torch.ones(1, K, dtype=torch.bool)])
    if nz.shape[0] == 0:
        return dense, 0
    return dense, tile_sparse(nz, config)[0].tiles


def _weight_count(model: nn.Module, config) -> TileCount:
    layers = {}
    for name, m in synaptic_layers(model).items():
        layers[name] = weight_tiles(m.weight, getattr(m, "bias", None) is not None, config)
    return TileCount(sum(d for d, _ in layers.values()), sum(o for _, o in layers.values()), layers, "weights")


def _pe_count(model: nn.Module, config) -> TileCount:
    from spikec.hardware.crossbar import program_crossbar
    from spikec.hardware.extract import pe_program

    layers, exact = {}, {}
    for layer in pe_program(model).layers:
        xbar = program_crossbar(layer, config)
        t = xbar.tiling
        layers[layer.name] = (t.row_tiles * t.col_tiles * t.copies, t.tiles)
        exact[layer.name] = bool(xbar.grid.exact)
    return TileCount(sum(d for d, _ in layers.values()), sum(o for _, o in layers.values()), layers, "pe", exact)


def tile_count(model: nn.Module, config) -> TileCount:
    """Tiles ``model`` occupies on ``config`` (a :class:`spikec.hardware.config.HardwareConfig`).

    The PE's own count for a TTFS network it can map; the weight layout otherwise (and when the PE
    cannot map the network, for example a skip connection it does not support).
    """
    from spikec.errors import SpikecError

    try:
        from spikec.conversion.ttfs_network import TTFSNetwork
    except ImportError:  # pragma: no cover
        TTFSNetwork = ()
    if isinstance(model, TTFSNetwork):
        try:
            return _pe_count(model, config)
        except SpikecError:
            pass
    return _weight_count(model, config)


def packed_tiles_hint(model: nn.Module, config, tiles: int) -> str | None:
    """A line saying how many tiles ``model`` would take with ``row_packing``, when ``config`` does not pack
    and packing would leave at most 90% of ``tiles`` (rows pruned per column tile); None otherwise."""
    from spikec.errors import SpikecError

    if config.row_packing:
        return None
    try:
        packed = tile_count(model, config.replace(row_packing=True)).occupied
    except (SpikecError, ValueError, RuntimeError):  # a network the layout cannot count says nothing
        return None
    if packed > 0.9 * tiles:
        return None
    return f"  with --pack-rows (a row address table lookup per drive) the same network takes {packed} tiles"


def tiles_freed(before: TileCount, after: TileCount) -> dict:
    """What a compression freed: tiles of the network before minus after, overall and per layer."""
    return {"tiles_before": before.occupied, "tiles_after": after.occupied,
            "tiles_freed": before.occupied - after.occupied,
            "freed_fraction": (before.occupied - after.occupied) / max(before.occupied, 1), "source": after.source,
            "layers": {n: {"before": before.layers.get(n, (0, 0))[1], "after": o}
                       for n, (_, o) in after.layers.items()},
            "on_cell_grid": dict(after.exact)}

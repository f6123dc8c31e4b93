"""A PE layer's energy from its *source* spike times: :func:`~spikec.hardware.energy.layer_energy`'s
numbers without building the unrolled ``[chips, B, positions, rows]`` tensors.

Profiling the default study on a CIFAR ResNet-20 put three quarters of the PE's time in the
accounting of the unrolled row times. But every input row of a position reads one source neuron
(or padding) and is switched off when the input window closes (step ``S``), before any neuron
can stop (a neuron's run ends at ``S + m + 1`` or at its stop, never before ``S``). So the
crossbar, driver and buffer terms of the input rows are sums over source neurons ``j``:

    sum_{p,i} G_{p,i} max(S - t_{src(p,i)}, 0) = sum_j max(S - t_j, 0) W_j,
    W_j = sum_{(p,i): src(p,i) = j} G_{p,i}     (G_{p,i} = sum_k G+ + G- of row i on p's copy)

and likewise ``D_j`` (column tiles driven) and ``R_j`` (buffer reads, of rows that reach a tile) per source neuron, computed
once per chip set. Replayed copy rows read their original row's source; bias rows conduct from
a fixed step; ramp rows from ``S`` until each neuron ends (a ``[P, K]`` sum). The neuron terms
(opamp, comparator, spike, wake-up) are ``layer_energy``'s own. ``tests/hardware/test_source_energy.py``
checks equality with ``layer_energy`` on the unrolled rows.
"""
from __future__ import annotations

import torch

from spikec.hardware.config import HardwareConfig
from spikec.hardware.energy import neuron_terms_and_total, wake_steps
from spikec.hardware.extract import unroll_index, unroll_inputs

INF = float("inf")


def _row_sources(xb) -> torch.Tensor:
    """``[P, input rows + copy rows]`` source neuron of each buffered row (``-1``: padding)."""
    idx = unroll_index(xb.layer)
    return torch.cat([idx, idx[:, xb.dup_of]], dim=1) if xb.dup_of.numel() else idx


def source_weights(chip) -> dict:
    """Per-source sums of one chip set (cached on the chip): ``W`` ``[C, n_src]`` (S), ``D``, ``R`` ``[n_src]``,
    and the bias and ramp rows' conductances."""
    cached = getattr(chip, "_source_weights", None)
    if cached is not None:
        return cached
    xb = chip.crossbar
    layer = xb.layer
    n_src = int(torch.tensor(layer.in_shape).prod())
    src = _row_sources(xb)  # [P, R]
    P = src.shape[0]
    N, nb, nr = xb.input_rows, xb.bias_rows, xb.ramp_rows
    g_sum = (chip.g_pos + chip.g_neg).to(torch.float64)  # [C, copies, rows, K]
    g_row = g_sum.sum(-1)  # [C, copies, rows]
    C, copies = g_row.shape[:2]
    of_copy = torch.arange(P) % copies  # the copy position p runs on
    rows = torch.cat([torch.arange(N), N + nb + nr + torch.arange(xb.dup_of.numel())])
    g_buf = g_row[:, :, rows][:, of_copy]  # [C, P, R]: rows first, so nothing [C, P, all rows] is built
    safe = torch.where(src < 0, torch.full_like(src, n_src), src).reshape(-1)
    W = torch.zeros(C, n_src + 1, dtype=torch.float64).index_add_(1, safe, g_buf.reshape(C, -1))[:, :n_src]
    reach = xb.row_col_tiles.to(torch.float64)[rows]  # column tiles each buffered row drives
    D = torch.zeros(n_src + 1, dtype=torch.float64).index_add_(0, safe, reach.expand(P, -1).reshape(-1))[:n_src]
    read = ((torch.arange(src.shape[1]) < N) & (reach > 0)).expand(P, -1).reshape(-1)  # input rows that reach a tile
    reads = torch.zeros(n_src + 1, dtype=torch.float64).index_add_(
        0, safe[read], torch.ones(int(read.sum()), dtype=torch.float64))[:n_src]
    out = {
        "W": W, "D": D, "R": reads,
        "bias_g": g_row[:, :, N:N + nb].sum(-1)[:, of_copy].sum(-1),  # [C]: all positions' bias rows
        "ramp_g": g_sum[:, :, N + nb:N + nb + nr].sum(-2)[:, of_copy],  # [C, P, K]
        "fixed_cols": float(xb.row_col_tiles.to(torch.float64)[N:N + nb + nr].sum()) * P,  # bias + ramp drives
        "copies": copies,
    }
    object.__setattr__(chip, "_source_weights", out)
    return out


def source_layer_energy(chip, steps_in: torch.Tensor, m: torch.Tensor, stop: torch.Tensor,
                        config: HardwareConfig, power_gating: bool, wakeup: bool | None = None) -> dict:
    """``layer_energy`` of one layer run: ``steps_in`` ``[C, B, *in_shape]`` source spike steps (``inf``: none),
    ``m`` ``[C, B, P, K]`` firing steps in the own window, ``stop`` ``[C, B, P]`` steps each run lasted.
    ``wakeup`` overrides ``config.wakeup_on_input``."""
    wakeup = config.wakeup_on_input if wakeup is None else bool(wakeup)
    xb = chip.crossbar
    S = config.window_steps
    sw = source_weights(chip)
    C, B = steps_in.shape[:2]
    t = steps_in.to(torch.float64).reshape(C, B, -1)
    dt = config.cycle_s
    t_out = S + m.to(torch.float64) + 1
    stop = S + stop.to(torch.float64)
    fired = torch.isfinite(t_out)
    end = torch.minimum(t_out, stop.unsqueeze(-1)) if power_gating else stop.unsqueeze(-1).expand_as(t_out)

    on = torch.isfinite(t)
    f = torch.where(on, (S - t).clamp(min=0), torch.zeros_like(t))  # input rows conduct until the window closes
    bias_on = float(S - S // config.late_bias)
    conduction = torch.einsum("cbj,cj->cb", f, sw["W"]) + (S - bias_on) * sw["bias_g"].unsqueeze(1)
    if xb.ramp_rows:
        conduction = conduction + ((end - S).clamp(min=0) * sw["ramp_g"].unsqueeze(1)).sum((-2, -1))
    crossbar = config.v_read**2 * dt * conduction
    if wakeup:  # the first row of each run switched on: a gather, only with wake-up
        first = unroll_inputs(xb.layer, steps_in.to(torch.float64), INF).amin(-1)  # [C, B, P]
        if xb.bias_rows:
            first = first.clamp(max=bias_on)
        if xb.ramp_rows:
            first = first.clamp(max=float(S))
        wake = wake_steps(first.unsqueeze(-1), stop)
    else:
        wake = torch.zeros_like(stop)
    onf = on.to(torch.float64)
    driver = config.driver_energy_j * (onf @ sw["D"] + sw["fixed_cols"])
    row_table = config.buffer_energy_per_bit_j * xb.tiling.address_bits * (onf @ sw["D"])  # input and copy rows' drives
    return neuron_terms_and_total(config, crossbar, driver, onf @ sw["R"], end, wake, fired, stop, float(S),
                                  power_gating, wakeup, sw["copies"], xb.tiling.tiles, row_table)

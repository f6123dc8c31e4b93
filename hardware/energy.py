"""Per-layer energy and latency of the twin-column PE: a pure function of spike times.

:func:`layer_energy` takes the conductances of one layer, the step of every input spike on every
row, the step of every output spike, and the step at which each run stops, and returns the
energy of each component per inference. Nothing else enters, so every number can be checked by
hand (``docs/hardware-model.md`` writes out the equations; ``tests/hardware/test_energy.py``
does the 2-input, 1-neuron case).

Times are clock steps counted from the start of the run (the start of the layer's input window).
A row driven from step ``t`` until step ``e`` conducts for ``e - t`` cycles of ``1/clock`` s.
"""
from __future__ import annotations

import math

import torch

from spikec.hardware.config import HardwareConfig

COMPONENTS = ("crossbar", "neuron", "driver", "buffer", "static")
NEURON_PARTS = ("opamp", "comparator", "spike", "wakeup")

# elements of the [.., rows, neurons] conduction-time tensor built at once
_CHUNK_ELEMENTS = 1 << 24


def layer_energy(
    g_pos: torch.Tensor,
    g_neg: torch.Tensor,
    t_in: torch.Tensor,
    t_out: torch.Tensor,
    stop: torch.Tensor,
    config: HardwareConfig,
    *,
    row_end: torch.Tensor | None = None,
    fire_start: float = 0.0,
    buffered_rows: int | None = None,
    col_tiles: int | torch.Tensor = 1,
    tiles: int = 1,
    address_bits: int | torch.Tensor = 0,
    power_gating: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Energy (J) and latency (s) of one layer for each inference in the batch.

    Args:
        g_pos, g_neg: conductances (S) of the ``G+`` and ``G-`` columns: ``[rows, K]``,
            ``[copies, rows, K]`` (position ``p`` runs on copy ``p % copies``) or
            ``[chips, copies, rows, K]`` with ``t_in``'s first dimension the chip.
        t_in: ``[..., P, rows]`` step at which row ``i`` of output position ``p`` is switched on
            (``inf``: never).
        t_out: ``[..., P, K]`` step at which each neuron fired (``inf``: silent); the neuron's
            module and its column pair are on up to that step.
        stop: ``[..., P]`` step at which each position's run stops (the layer's stop time).
        row_end: ``[rows]`` step at which each row is switched off whatever the neuron does
            (``inf``: it conducts until the run stops, or with power gating until the neuron fired).
        fire_start: step from which the comparator decides (the neuron's firing window opens).
        buffered_rows: the first ``buffered_rows`` rows carry spike times read from the buffer
            (default: all); the others (bias, ramp) are driven by the controller.
        col_tiles: column tiles a row drive reaches (one driver per tile row per spike): a number,
            or ``[rows]`` when empty tiles are left out.
        tiles: tiles of the layer (static leakage).
        address_bits: row address table bits read per column tile a row drive reaches (``Tiling.address_bits``
            on rows carrying input spikes, 0 on bias and ramp rows; 0 everywhere without row packing): a
            number for the buffered rows, or ``[rows]``.
        power_gating: overrides ``config.power_gating``.

    Returns a dict of ``[...]`` tensors: ``crossbar``, ``neuron`` (= ``opamp`` + ``comparator`` +
    ``spike`` + ``wakeup``), ``driver``, ``buffer`` (of which ``row_table``), ``static``, ``total``,
    ``latency_s``, ``spikes_in`` (buffer reads), ``spikes_out``.

    Equations (``dt`` = 1/clock; ``e_pk`` = end of neuron ``k`` at position ``p``:
    ``min(t_out_pk, stop_p)`` with power gating, ``stop_p`` without):

    - crossbar = ``V_read^2 * dt * sum_{p,i,k} (G+_ik + G-_ik) * max(min(row_end_i, e_pk) - t_pi, 0)``
    - opamp = ``P_opamp * dt * sum_{p,k} (e_pk - w_p)``, ``w_p = 0``, or with ``config.wakeup_on_input``
      the first step any row of run ``p`` is switched on (:func:`wake_steps`);
      comparator = ``E_cmp * sum_{p,k} max(e_pk - fire_start, 0)``
    - spike = ``E_spike * #fired``; wakeup = ``E_wake * P * K`` with power gating or event-driven
      wake-up (each neuron is woken once per position), else 0
    - driver = ``E_drv * sum_{(p, i) driven} col_tiles_i``
    - buffer = ``bits * E_bit * (#buffered input spikes read + #output spikes written)``; a spike is read
      only for rows that reach a column tile (``col_tiles_i > 0``): a row whose cells all hold level 0
      (its weights round to zero; all-zero rows are dropped at extraction) is enabled in no tile, so
      nothing asks for its spike; with row packing each drive also reads the row's address table entry
      for that column tile: row_table = ``E_bit * sum_{(p, i) driven} col_tiles_i * address_bits_i``, part of buffer
    - static = ``(tiles * P_leak + P_ctrl) * latency``; latency = ``dt * sum over runs of the
      longest stop among the positions the run holds`` (``copies`` positions per run)
    """
    gating = config.power_gating if power_gating is None else bool(power_gating)
    dt = config.cycle_s
    t_in = t_in.to(torch.float64)
    t_out = t_out.to(torch.float64)
    stop = stop.to(torch.float64)
    g_sum = (g_pos + g_neg).to(torch.float64)
    P, rows = t_in.shape[-2], t_in.shape[-1]
    K = t_out.shape[-1]
    if g_sum.shape[-2:] != (rows, K):
        raise ValueError(f"conductances {tuple(g_sum.shape)} do not match {rows} rows x {K} neurons")
    if t_out.shape[-2] != P or stop.shape[-1] != P:
        raise ValueError(f"t_in {tuple(t_in.shape)}, t_out {tuple(t_out.shape)} and stop {tuple(stop.shape)} disagree on positions")
    row_end = torch.full((rows,), float("inf"), dtype=torch.float64) if row_end is None else \
        torch.as_tensor(row_end, dtype=torch.float64).expand(rows)
    buffered = rows if buffered_rows is None else int(buffered_rows)

    fired = torch.isfinite(t_out)
    end = torch.minimum(t_out, stop.unsqueeze(-1)) if gating else stop.unsqueeze(-1).expand_as(t_out)
    driven = torch.isfinite(t_in)
    wake = wake_steps(t_in, stop) if config.wakeup_on_input else torch.zeros_like(stop)

    crossbar = config.v_read**2 * dt * _conduction(g_sum, t_in, end, row_end)
    col = torch.as_tensor(col_tiles, dtype=torch.float64)  # a number, or per row (column tiles where its segment holds a nonzero weight)
    driver = config.driver_energy_j * (driven.to(torch.float64) * col).sum((-2, -1))
    reaches = (col > 0).expand(rows)[:buffered]  # a row on level 0 in every tile is neither driven nor read
    reads = (driven[..., :buffered] & reaches).sum((-2, -1)).to(torch.float64)
    if isinstance(address_bits, torch.Tensor):
        bits = address_bits.to(torch.float64).expand(rows)
    else:
        bits = torch.zeros(rows, dtype=torch.float64)
        bits[:buffered] = float(address_bits)
    row_table = config.buffer_energy_per_bit_j * (driven.to(torch.float64) * (col * bits)).sum((-2, -1))
    return neuron_terms_and_total(config, crossbar, driver, reads, end, wake, fired, stop, fire_start, gating,
                                  config.wakeup_on_input, _canonical_g(g_sum, t_in).shape[1], tiles, row_table)


def neuron_terms_and_total(config: HardwareConfig, crossbar, driver, reads, end, wake, fired, stop,
                           fire_start: float, gating: bool, wakeup_on_input: bool, copies: int, tiles: int,
                           row_table: torch.Tensor | float = 0.0) -> dict:
    """The terms every accounting of a layer run shares, given its crossbar and driver energies, buffer
    reads and row address table energy ``[...]`` (part of the buffer): the neuron parts from ``end``
    ``[..., P, K]`` (each neuron's last step) and ``wake`` ``[..., P]``, the buffer, latency and static terms
    from ``stop`` ``[..., P]``, and the totals (:func:`layer_energy`'s equations;
    :mod:`spikec.hardware.source_energy` calls it too)."""
    dt = config.cycle_s
    P, K = end.shape[-2:]
    opamp = config.opamp_power_w * dt * (end - wake.unsqueeze(-1)).clamp(min=0).sum((-2, -1))
    comparator = config.comparator_energy_j * (end - fire_start).clamp(min=0).sum((-2, -1))
    spike_count = fired.sum((-2, -1)).to(torch.float64)
    spike = config.spike_energy_j * spike_count
    wakeup = torch.full_like(spike, config.wakeup_energy_j * P * K if gating or wakeup_on_input else 0.0)
    row_table = torch.as_tensor(row_table, dtype=torch.float64).expand_as(spike_count)
    buffer = config.spike_bits * config.buffer_energy_per_bit_j * (reads + spike_count) + row_table
    latency = dt * run_cycles(stop, copies)
    static = (tiles * config.tile_leakage_w + config.control_power_w) * latency
    neuron = opamp + comparator + spike + wakeup
    total = crossbar + neuron + driver + buffer + static
    return {
        "crossbar": crossbar, "neuron": neuron, "driver": driver, "buffer": buffer, "static": static,
        "total": total, "opamp": opamp, "comparator": comparator, "spike": spike, "wakeup": wakeup,
        "row_table": row_table, "latency_s": latency, "spikes_in": reads, "spikes_out": spike_count,
    }


def wake_steps(t_in: torch.Tensor, stop: torch.Tensor) -> torch.Tensor:
    """``[..., P]`` step at which a run's integrators wake with event-driven wake-up.

    The first current into the crossbar: the earliest row switched on (input spike, bias row, or
    the ramp rows when the own window opens), never after the run stops. An integrator gated off
    before that loses no charge, since no row conducts.
    """
    first = t_in.amin(-1) if t_in.shape[-1] else torch.full_like(stop, float("inf"))
    return torch.minimum(first, stop)


def _canonical_g(g_sum: torch.Tensor, t_in: torch.Tensor) -> torch.Tensor:
    """Conductances as ``[G, copies, rows, K]``; ``G`` is 1 or ``t_in``'s first dimension (chips)."""
    if g_sum.dim() == 2:
        return g_sum.reshape(1, 1, *g_sum.shape)
    if g_sum.dim() == 3:
        return g_sum.unsqueeze(0)
    if g_sum.dim() == 4:
        if t_in.dim() < 3 or g_sum.shape[0] != t_in.shape[0]:
            raise ValueError(f"per-chip conductances {tuple(g_sum.shape)} need t_in with {g_sum.shape[0]} chips first, got {tuple(t_in.shape)}")
        return g_sum
    raise ValueError(f"conductances must be [rows, K], [copies, rows, K] or [chips, copies, rows, K], got {tuple(g_sum.shape)}")


def run_cycles(stop: torch.Tensor, copies: int = 1) -> torch.Tensor:
    """Cycles of a layer: positions go ``copies`` at a time, each run lasting its longest stop."""
    P = stop.shape[-1]
    if copies <= 1:
        return stop.sum(-1)
    runs = -(-P // copies)
    pad = runs * copies - P
    s = torch.nn.functional.pad(stop, (0, pad), value=0.0)
    return s.reshape(*stop.shape[:-1], runs, copies).amax(-1).sum(-1)


def _conduction(g_sum: torch.Tensor, t_in: torch.Tensor, end: torch.Tensor, row_end: torch.Tensor) -> torch.Tensor:
    """``sum_{p,i,k} G_ik * max(min(row_end_i, end_pk) - t_pi, 0)`` (S x cycles) per leading index.

    Rows switched off before any neuron can end (``row_end_i <= min end``) conduct
    ``max(row_end_i - t_pi, 0)`` whatever the neuron does, so they need only their row sums;
    the other rows need the full ``[P, rows, K]`` product.
    """
    lead = t_in.shape[:-2]
    P, rows = t_in.shape[-2:]
    K = end.shape[-1]
    g = _canonical_g(g_sum, t_in)
    G, copies = g.shape[:2]
    g = g[:, torch.arange(P) % copies] if copies > 1 else g[:, :1]  # [G, P or 1, rows, K]
    t = t_in.reshape(G, -1, P, rows)
    e = end.reshape(G, -1, P, K)
    M = t.shape[1]
    e_min = float(end.min()) if end.numel() else float("inf")
    fixed = torch.isfinite(row_end) & (row_end <= e_min)
    out = torch.zeros(G, M, dtype=torch.float64)
    if bool(fixed.any()):
        fi = fixed.nonzero().squeeze(1)
        dur = (row_end[fi] - t[..., fi]).clamp(min=0)  # [G, M, P, f]; inf starts give -inf -> 0
        dur = torch.nan_to_num(dur, nan=0.0, neginf=0.0)
        row_g = g[..., fi, :].sum(-1)  # [G, P or 1, f]
        out += (dur * row_g.unsqueeze(1)).sum((-2, -1))
    rest = (~fixed).nonzero().squeeze(1)
    if rest.numel():
        # rows switched on at the same step everywhere (ramp rows) merge into one conductance per group
        n = rest.numel()
        t_rest = t[..., rest].reshape(-1, n)
        t0 = t_rest[0] if t_rest.shape[0] else torch.full((n,), float("inf"), dtype=torch.float64)
        const = (t_rest == t0).all(0)
        groups: dict[tuple[float, float], list[int]] = {}
        for j in const.nonzero().squeeze(1).tolist():
            groups.setdefault((float(t0[j]), float(row_end[rest[j]])), []).append(int(rest[j]))
        for (start, stop_row), sel in groups.items():
            if not math.isfinite(start):
                continue  # never switched on
            g_grp = g[..., sel, :].sum(-2)  # [G, P or 1, K]
            dur = (torch.clamp(e, max=stop_row) - start).clamp(min=0)  # [G, M, P, K]
            out += (dur * g_grp.unsqueeze(1)).sum((-2, -1))
        rest = rest[~const]
    if rest.numel():
        g_rest = g[..., rest, :]
        r_end = row_end[rest].view(-1, 1)
        step = max(1, _CHUNK_ELEMENTS // max(P * rest.numel() * K, 1))
        for c in range(G):
            for a in range(0, M, step):
                b = min(M, a + step)
                stop_at = torch.minimum(e[c, a:b].unsqueeze(-2), r_end)  # [m, P, rest, K]
                dur = (stop_at - t[c, a:b][..., rest].unsqueeze(-1)).clamp(min=0)
                dur = torch.nan_to_num(dur, nan=0.0, neginf=0.0)  # silent rows conduct nothing
                out[c, a:b] += (dur * g_rest[c]).sum((-3, -2, -1))
    return out.reshape(lead)


def rate_layer_energy(
    g_pos: torch.Tensor,
    g_neg: torch.Tensor,
    input_uses: torch.Tensor | float,
    output_spikes: torch.Tensor | float,
    timesteps: int,
    positions: int,
    config: HardwareConfig,
    *,
    col_tiles: int = 1,
    tiles: int = 1,
    copies: int = 1,
) -> dict[str, torch.Tensor]:
    """Energy of one layer of a rate-coded SNN on the same crossbar (the baseline of issue 7).

    Each input spike is a read pulse of ``t_pulse = read_pulse_s`` on its row; ``input_uses``
    counts row drives (an input spike feeding ``u`` output positions counts ``u`` times; an analog
    first-layer input counts its value, a pulse ``x * t_pulse`` wide). IF neurons are powered for all
    ``timesteps`` steps at every position (no power gating), one comparator decision per step.
    Without per-row spike counts the row conductance is the layer mean:

    - crossbar = ``V_read^2 * t_pulse * uses * mean_i sum_k (G+_ik + G-_ik)``
    - neuron = ``(P_opamp * dt + E_cmp) * T * K * P + E_spike * output_spikes``
    - driver = ``E_drv * col_tiles * uses``; buffer = ``ceil(log2 T) * E_bit * (uses + output_spikes)``
    - static = ``(tiles * P_leak + P_ctrl) * latency``, latency = ``ceil(P / copies) * T * dt``
    """
    dt = config.cycle_s
    K = g_pos.shape[-1]
    row_g = (g_pos + g_neg).to(torch.float64).sum(-1).mean()
    uses = torch.as_tensor(input_uses, dtype=torch.float64)
    out = torch.as_tensor(output_spikes, dtype=torch.float64)
    T = int(timesteps)
    bits = max(1, (T - 1).bit_length())
    crossbar = config.v_read**2 * config.read_pulse_s * uses * row_g
    opamp = config.opamp_power_w * dt * T * K * positions + 0 * uses
    comparator = config.comparator_energy_j * T * K * positions + 0 * uses
    spike = config.spike_energy_j * out
    neuron = opamp + comparator + spike
    driver = config.driver_energy_j * col_tiles * uses
    buffer = bits * config.buffer_energy_per_bit_j * (uses + out)
    latency = -(-positions // copies) * T * dt + 0 * uses
    static = (tiles * config.tile_leakage_w + config.control_power_w) * latency
    total = crossbar + neuron + driver + buffer + static
    return {"crossbar": crossbar, "neuron": neuron, "driver": driver, "buffer": buffer, "static": static,
            "total": total, "opamp": opamp, "comparator": comparator, "spike": spike,
            "wakeup": torch.zeros_like(total), "latency_s": latency, "spikes_in": uses, "spikes_out": out}

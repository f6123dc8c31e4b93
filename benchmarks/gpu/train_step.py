"""Part 3: one whole SNN training step (forward, loss, backward, SGD step) against spikingjelly.

The networks are spikec.models' VGG-11 and ResNet-20 run multi-step by ``spikec.SpikingClassifier``
(T steps of direct input, membrane readout). spikingjelly's side is the same graph with the
same initial weights and only the neuron swapped for spikingjelly 2.0's fused multi-step LIF, so
the difference measured is the neuron implementation and nothing else. bf16 autocast on CUDA.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import spikec
from spikec.models import build_model
from spikec.module import SpikingModule

from gpu.budget import Budget
from gpu.config import SuiteConfig
from gpu.peers import BETA, THRESHOLD, SpikingjellyChoice, spikingjelly_lif
from gpu.timing import time_in_turns

DEPTHS = {"vgg": 11, "resnet": 20}


class SpikingjellyLIF(SpikingModule):
    """spikingjelly's multi-step LIF as a spikec layer (``[T, B, ...]`` in, spikes out, fresh state each call)."""

    def __init__(self, choice: SpikingjellyChoice | None):
        super().__init__()
        self.choice = choice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.choice is None:
            return spikingjelly_lif(x)
        with self.choice:
            return spikingjelly_lif(x)


def _spikingjelly_act(device: torch.device):
    """A factory of spikingjelly neurons, or why there is none."""
    try:
        from spikingjelly.activation_based import functional  # noqa: F401
        from spikingjelly.logger import logger
    except ImportError as err:
        return f"spikingjelly is not installed ({err})"
    logger.disable("spikingjelly")
    choice = None
    if device.type == "cuda":
        try:
            choice = SpikingjellyChoice("triton")
        except (ImportError, AttributeError, RuntimeError) as err:
            return f"cannot choose spikingjelly's triton implementation: {err}"
    return lambda: SpikingjellyLIF(choice)


def build(name: str, config: SuiteConfig, act, device) -> torch.nn.Module:
    torch.manual_seed(0)  # the same initial weights for every neuron implementation
    net = build_model(name, config.train_input, 10, act=act, depth=DEPTHS[name], width=config.train_width)
    return spikec.SpikingClassifier(net, timesteps=config.train_T).to(device)


def _step_fn(model, x, y, device: torch.device, autocast: bool):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        losses.append(loss.detach())

    return step, losses


def _peak_mib(step, device: torch.device) -> float | None:
    if device.type != "cuda":
        step()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def run(config: SuiteConfig, budget: Budget) -> dict:
    device = torch.device(config.device)
    autocast = device.type == "cuda"
    sj_act = _spikingjelly_act(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((config.train_batch, *config.train_input), generator=gen).to(device)
    y = torch.randint(0, 10, (config.train_batch,), generator=gen).to(device)
    models, skipped = [], {}
    for name in config.train_models:
        if budget.left() < 15 and not config.smoke:
            skipped[name] = f"time budget: {budget.left():.0f} s left"
            continue
        try:
            models.append(_one_model(name, config, device, autocast, sj_act, x, y, skipped))
        except Exception as err:  # noqa: BLE001  (one model's failure is recorded, the other still runs)
            first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
            models.append({"model": f"{name}{DEPTHS[name]}", "error": f"{type(err).__name__}: {first}", "rows": []})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    ok = all("error" not in m and all(r["losses_finite"] for r in m["rows"]) for m in models)
    return {"status": "ok" if ok else "failed", "models": models, "skipped": skipped}


def _one_model(name, config, device, autocast, sj_act, x, y, skipped) -> dict:
    nets = {"spikec": build(name, config, lambda: spikec.LIF(beta=BETA, threshold=THRESHOLD), device)}
    if isinstance(sj_act, str):
        skipped[f"{name}: spikingjelly"] = sj_act
    else:
        nets["spikingjelly[triton]" if device.type == "cuda" else "spikingjelly"] = build(name, config, sj_act, device)
    with torch.no_grad():  # same weights, same input: how far apart the two networks' scores are
        scores = {k: m.eval()(x).float() for k, m in nets.items()}
    for m in nets.values():
        m.train()
    steps, losses, peaks = {}, {}, {}
    for k, m in nets.items():
        steps[k], losses[k] = _step_fn(m, x, y, device, autocast)
        peaks[k] = _peak_mib(steps[k], device)
    ms = time_in_turns(steps, config.train_reps, config.train_warmup, device)
    ref = scores["spikec"]
    rows = []
    for k in nets:
        loss_values = [float(v) for v in losses[k]]
        agreement = float((scores[k].argmax(1) == ref.argmax(1)).float().mean())
        rows.append({
            "method": k, "ms_per_step": round(ms[k], 3),
            "images_per_s": round(config.train_batch / ms[k] * 1e3, 1),
            "time_over_spikec": round(ms[k] / ms["spikec"], 3), "peak_memory_mib": peaks[k],
            "first_loss": round(loss_values[0], 4), "last_loss": round(loss_values[-1], 4),
            "losses_finite": all(v == v and abs(v) != float("inf") for v in loss_values),
            "eval_scores_max_abs_diff_vs_spikec": round(float((scores[k] - ref).abs().max()), 5),
            "eval_argmax_agreement_vs_spikec": round(agreement, 4),
        })
    return {"model": f"{name}{DEPTHS[name]}", "batch": config.train_batch, "T": config.train_T,
            "input": list(config.train_input), "width": config.train_width,
            "autocast": "bfloat16" if autocast else None,
            "lif_backend": spikec.kernels.dispatch.available_backends(device)[0], "rows": rows}

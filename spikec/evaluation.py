"""Accuracy and spikes of a spiking classifier at several simulation lengths, from one run.

With direct or rate input, the first ``t`` steps of a ``T``-step run are the ``t``-step run: the
neurons start from the same state, the input of a step does not depend on ``T`` (rate spikes are
drawn step by step from a generator seeded per batch) and every readout decodes the first ``t``
outputs as a ``t``-step run would. So :func:`evaluate_steps` runs each batch once for ``max(T)``
steps and reads the scores and the spike counts at every requested ``T`` as the run passes it.

The run is fed in segments that end at every requested ``T`` and at least every ``chunk`` steps;
the layers keep their state from one segment to the next, so the merged ``[steps * B, ...]``
activations never exceed ``chunk * B`` samples and peak memory does not grow with ``T``. Only the
network output (``[T, B, classes]``) is kept over the whole run. On CPU a chunked run equals the
unchunked one bitwise, provided the BLAS kernels give each sample the same result whatever the
merged batch size, which holds except for very small merged batches (about a dozen samples or
fewer, where a different kernel can round one sum differently by one ulp).

Latency input has no such prefix (a spike's step scales with ``T``): each ``T`` then gets its own
run, still in chunks. Spikes are counted by :func:`spikec.record`, one recording per batch, read
at the end of each requested step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from spikec.errors import SpikecError, UsageError
from spikec.kernels.small_conv import small_map_convolutions
from spikec.module import reset
from spikec.record import record
from spikec.snn import SpikingClassifier

DEFAULT_CHUNK = 8


@dataclass(frozen=True)
class StepResult:
    """Accuracy and spikes after ``timesteps`` steps; spikes are totals over all evaluated samples."""

    timesteps: int
    accuracy: float
    total_spikes: float
    spikes_per_inference: float
    spikes_per_neuron: float
    layer_spikes: dict = field(default_factory=dict)  # layer name -> spikes of that layer over all samples


@dataclass(frozen=True)
class StepEvaluation:
    """One :func:`evaluate_steps` call: a :class:`StepResult` per requested ``T``, ascending."""

    results: tuple
    samples: int
    num_neurons: int
    layer_neurons: dict
    one_pass: bool
    simulated_steps: int  # steps simulated per sample: max(T) in one pass, sum(T) otherwise
    seconds: float

    def __getitem__(self, timesteps: int) -> StepResult:
        for r in self.results:
            if r.timesteps == timesteps:
                return r
        raise KeyError(timesteps)

    @property
    def timesteps(self) -> list[int]:
        return [r.timesteps for r in self.results]

    @property
    def accuracy(self) -> dict[int, float]:
        return {r.timesteps: r.accuracy for r in self.results}

    @property
    def spikes_per_neuron(self) -> dict[int, float]:
        """Mean spikes per neuron per inference at each ``T``."""
        return {r.timesteps: r.spikes_per_neuron for r in self.results}

    def summary(self) -> dict:
        """Plain numbers, for JSON."""
        def layers(r):
            return {n: {"spikes_per_inference": s / max(self.samples, 1),
                        "spikes_per_neuron": s / max(self.samples, 1) / max(self.layer_neurons.get(n, 0), 1)}
                    for n, s in r.layer_spikes.items()}

        return {
            "samples": self.samples, "num_neurons": self.num_neurons, "one_pass": self.one_pass,
            "simulated_steps": self.simulated_steps, "seconds": self.seconds,
            "steps": {r.timesteps: {"accuracy": r.accuracy, "total_spikes": r.total_spikes,
                                    "spikes_per_inference": r.spikes_per_inference,
                                    "spikes_per_neuron": r.spikes_per_neuron, "layers": layers(r)}
                      for r in self.results},
        }


def segment_ends(timesteps, chunk: int | None) -> list[int]:
    """Where a run of ``max(timesteps)`` steps is cut: at every requested step and every ``chunk`` steps."""
    last = max(timesteps)
    ends = set(int(t) for t in timesteps)
    if chunk is not None:
        ends.update(range(int(chunk), last, int(chunk)))
    return sorted(ends)


def run_steps(snn: SpikingClassifier, x: torch.Tensor, timesteps, chunk: int | None = DEFAULT_CHUNK,
              generator: torch.Generator | None = None, on_step=None) -> dict[int, torch.Tensor]:
    """Class scores ``[B, classes]`` of one batch at every requested ``T``, from one fresh run of ``max(T)`` steps.

    ``on_step(t)`` is called when the run has passed requested step ``t`` (before the next segment).
    Needs an input coding whose shorter runs are prefixes of longer ones (:attr:`prefix_consistent`).
    """
    steps = _check_steps(timesteps)
    _check_chunk(chunk)
    if not snn.prefix_consistent:
        raise UsageError(f"{snn.encoding} input is not a prefix of a longer run; evaluate each T separately")
    return _run(snn, x, max(steps), steps, chunk, generator, on_step)


def _run(snn, x, total, wanted, chunk, generator, on_step) -> dict[int, torch.Tensor]:
    reset(snn)
    outs, scores, start = [], {}, 0
    for end in segment_ends(wanted, chunk):
        outs.append(snn.net(snn.encode_steps(x, start, end - start, timesteps=total, generator=generator)))
        start = end
        if end in wanted:
            outs = [torch.cat(outs)] if len(outs) > 1 else outs
            scores[end] = snn.decode(outs[0])
            if on_step is not None:
                on_step(end)
    return scores


def evaluate_steps(
    snn: SpikingClassifier,
    data,
    timesteps=(1, 2, 4, 8, 16, 32, 64),
    *,
    batch_size: int = 256,
    chunk: int | None = DEFAULT_CHUNK,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
) -> StepEvaluation:
    """Accuracy and spikes of ``snn`` on ``data`` at every ``T`` in ``timesteps``, from one run of ``max(T)`` per batch.

    ``data``: the forms :func:`spikec.training.evaluate` accepts. ``chunk``: at most this many steps
    are simulated at once (``None``: each segment up to the next requested ``T`` at once).
    ``device``: where inputs go (default: the model's device; the model is not moved). ``seed``
    seeds rate-coded input: batch ``i`` draws from a generator seeded from ``(seed, i)``, so any
    ``timesteps`` list gives the same spikes over the steps they share. ``snn.timesteps`` and its
    train/eval mode are left as they were.
    """
    from spikec.training import batches

    if not isinstance(snn, SpikingClassifier):
        raise UsageError(f"evaluate_steps needs a SpikingClassifier (such as a converted RateSNN), "
                         f"got {type(snn).__name__}")
    steps = _check_steps(timesteps)
    _check_chunk(chunk)
    if int(batch_size) < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    if device is None:
        param = next(snn.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    one_pass = snn.prefix_consistent
    seeds = torch.Generator().manual_seed(int(seed))
    correct = {t: 0 for t in steps}
    spikes: dict[int, dict[str, float]] = {t: {} for t in steps}
    neurons: dict[str, int] = {}
    seen = 0
    start_time = time.perf_counter()
    was_training = snn.training
    snn.eval()
    bar = tqdm(batches(data, int(batch_size), shuffle=False), total=_batch_count(data, int(batch_size)),
               desc=f"eval T<={max(steps)}", unit="batch", disable=not progress, leave=False)
    try:
        with torch.no_grad(), small_map_convolutions(snn):
            for x, y in bar:
                x, y = x.to(device), y.to(device)
                batch_seed = int(torch.randint(0, 2**62, (), generator=seeds))
                with record(snn, first_spike_times=False) as rec:
                    scores = _batch(snn, x, steps, chunk, batch_seed, one_pass, rec, spikes)
                for name, layer in rec.layers.items():
                    neurons[name] = layer.num_neurons
                for t in steps:
                    correct[t] += int((scores[t].argmax(1) == y).sum())
                seen += len(y)
                bar.set_postfix(acc=f"{correct[steps[-1]] / max(seen, 1):.4f}")
    finally:
        bar.close()
        snn.train(was_training)
    if seen == 0:
        raise SpikecError("evaluation data is empty")
    num_neurons = sum(neurons.values())
    results = []
    for t in steps:
        total = sum(spikes[t].values())
        results.append(StepResult(t, correct[t] / seen, total, total / seen, total / seen / max(num_neurons, 1),
                                  dict(spikes[t])))
    return StepEvaluation(tuple(results), seen, num_neurons, neurons, one_pass,
                          max(steps) if one_pass else sum(steps), time.perf_counter() - start_time)


def _batch(snn, x, steps, chunk, batch_seed, one_pass, rec, spikes) -> dict[int, torch.Tensor]:
    """Scores of one batch at every step; adds each layer's spikes up to each step into ``spikes``."""
    generator = torch.Generator(device=x.device).manual_seed(batch_seed) if snn.encoding == "rate" else None
    base: dict[str, float] = {}

    def read(t):
        for name, layer in rec.layers.items():
            spikes[t][name] = spikes[t].get(name, 0.0) + layer.spikes - base.get(name, 0.0)

    if one_pass:
        return _run(snn, x, max(steps), steps, chunk, generator, read)
    scores = {}
    for t in steps:  # each T its own run; spikes counted from where the previous run ended
        base = {name: layer.spikes for name, layer in rec.layers.items()}
        scores.update(_run(snn, x, t, [t], chunk, generator, read))
    return scores


def _check_steps(timesteps) -> list[int]:
    try:
        steps = sorted({int(t) for t in timesteps})
    except (TypeError, ValueError):
        raise UsageError(f"timesteps must be positive integers, got {timesteps!r}") from None
    if not steps or steps[0] < 1:
        raise UsageError(f"timesteps must be positive integers, got {timesteps!r}")
    return steps


def _check_chunk(chunk) -> None:
    if chunk is not None and int(chunk) < 1:
        raise UsageError(f"time chunk must be >= 1 step, got {chunk}")


def _batch_count(data, batch_size: int) -> int | None:
    try:
        n = len(data) if not isinstance(data, (tuple, list)) else len(data[1])
    except TypeError:
        return None
    from torch.utils.data import DataLoader

    return n if isinstance(data, DataLoader) else -(-n // batch_size)

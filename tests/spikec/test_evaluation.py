"""One-pass evaluation (spikec.evaluation): every T read from one run of max(T) steps equals a run of
that T on its own, and a run fed in time chunks equals the run fed at once, bitwise on CPU."""
import json
import operator

import pytest
import torch
from torch import nn

import spikec
from spikec import coding
from spikec.checkpoint import ann_checkpoint, save_checkpoint
from spikec.cli.main import main
from spikec.conversion.rate import convert_rate, rate_snn_checkpoint
from spikec.data import load_dataset
from spikec.data.sample import stratified_subset, stratified_tensors
from spikec.errors import UsageError
from spikec.evaluation import evaluate_steps, run_steps, segment_ends
from spikec.models import build_model
from spikec.training import evaluate, train

STEPS = [1, 2, 5, 8]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    """Stratified halves of the digits splits (720 training, 180 test samples), to keep the file fast."""
    train_data, test_data, info = load_dataset("digits")
    return stratified_subset(train_data, 720), stratified_subset(test_data, 180), info


def _calib(digits, n):
    return stratified_tensors(digits[0], n, seed=1)[0]


@pytest.fixture(scope="module")
def lenet_snn(digits):
    """A digits LeNet with max pooling, trained one epoch, converted to a rate SNN."""
    torch.manual_seed(0)
    ann = build_model("lenet", (1, 8, 8), 10, pool="max")
    train(ann, digits[0], epochs=1, lr=3e-3, progress=False, seed=0)
    ann.eval()
    return ann, convert_rate(ann, _calib(digits, 256), timesteps=8)


class _Residual(nn.Module):
    """conv -> relu -> maxpool -> (conv -> relu) + skip -> relu -> linear: a residual add after a spike max pool."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.branch = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x):
        h = self.pool(torch.relu(self.stem(x)))
        h = torch.relu(torch.relu(self.branch(h)) + h)
        return self.head(h.flatten(1))


def _separate(snn, data, T, batch_size):
    """The old way: one full evaluation per T, spikes through spikec.record."""
    snn.timesteps = T
    with spikec.record(snn, first_spike_times=False) as rec:
        accuracy = evaluate(snn, data, batch_size=batch_size)
    return accuracy, rec


def test_segments_end_at_every_requested_step_and_chunk():
    assert segment_ends([1, 2, 4, 8, 16], 3) == [1, 2, 3, 4, 6, 8, 9, 12, 15, 16]
    assert segment_ends([4, 16], None) == [4, 16]
    assert segment_ends([5], 5) == [5]


def test_one_pass_equals_separate_runs_on_a_converted_lenet(lenet_snn, digits):
    _, snn = lenet_snn
    test = digits[1]
    ev = evaluate_steps(snn, test, STEPS, batch_size=70, chunk=3)
    assert ev.one_pass and ev.simulated_steps == 8 and ev.samples == len(test)
    for T in STEPS:
        accuracy, rec = _separate(snn, test, T, 70)
        assert ev[T].accuracy == accuracy
        assert ev[T].total_spikes == rec.total_spikes
        assert ev[T].spikes_per_neuron == rec.spikes_per_neuron
        assert ev[T].layer_spikes == {n: r.spikes for n, r in rec.layers.items()}
    assert ev.num_neurons == rec.num_neurons
    # more steps, more spikes, and the converted net gets better than chance
    totals = [ev[T].total_spikes for T in STEPS]
    assert all(a < b for a, b in zip(totals, totals[1:]))
    assert ev[8].accuracy > 0.3
    # class scores, not only accuracy: each T from the long run is the T-step forward bitwise
    x = test.tensors[0][:70]  # the first batch
    scores = run_steps(snn, x, STEPS, chunk=5)
    with torch.no_grad():
        for T in STEPS:
            snn.timesteps = T
            assert torch.equal(scores[T], snn(x))


def test_chunked_equals_unchunked_with_max_pool_and_residual_add(digits):
    torch.manual_seed(1)
    ann = _Residual().eval()
    x, y = stratified_tensors(digits[1], 100)
    for rule in ("count", "gate"):
        snn = convert_rate(ann, _calib(digits, 128), timesteps=12, maxpool=rule)
        assert {"SpikeMaxPool", "BalancedIF"} <= {type(m).__name__ for m in snn.modules()}
        assert any(n.target is operator.add for n in snn.net.net.graph.nodes)  # the residual add, in currents
        with torch.no_grad():
            whole = snn(x)
        assert whole.abs().sum() > 0
        for chunk in (1, 3, 5, 12, None):
            assert torch.equal(run_steps(snn, x, [12], chunk=chunk)[12], whole), (rule, chunk)
        data = (x, y)
        runs = [evaluate_steps(snn, data, [3, 12], batch_size=50, chunk=c) for c in (None, 2, 7)]
        assert all(r.accuracy == runs[0].accuracy and r.results == runs[0].results for r in runs[1:])
        accuracy, rec = _separate(snn, data, 12, 50)
        assert runs[0][12].accuracy == accuracy and runs[0][12].total_spikes == rec.total_spikes


@pytest.mark.parametrize("encoding", ["direct", "rate"])
@pytest.mark.parametrize("readout", ["membrane", "count", "first_spike"])
def test_a_lif_classifier_at_every_step_equals_its_own_runs(encoding, readout):
    torch.manual_seed(2)
    last = [spikec.LIF(beta=0.8, threshold=0.4)] if readout != "membrane" else []
    net = nn.Sequential(nn.Linear(12, 32), spikec.LIF(beta=0.9, threshold=0.5), nn.Linear(32, 5), *last)
    clf = spikec.SpikingClassifier(net, timesteps=10, encoding=encoding, readout=readout).eval()
    x, y = torch.rand(48, 12), torch.randint(0, 5, (48,))
    steps = [1, 3, 4, 10]
    long = run_steps(clf, x, steps, chunk=3, generator=torch.Generator().manual_seed(7))
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        for T in steps:
            torch.manual_seed(7)  # forward draws rate spikes from the global generator
            clf.timesteps = T
            assert torch.equal(long[T], clf(x)), T
    ev = evaluate_steps(clf, (x, y), steps, batch_size=16, chunk=4, seed=3)
    for T in steps:  # one pass == one call per T with the same seed, spike counts included
        alone = evaluate_steps(clf, (x, y), [T], batch_size=16, chunk=None, seed=3)
        assert alone.results == (ev[T],)
    assert ev[10].total_spikes > ev[1].total_spikes > 0


def test_rate_spikes_of_a_shorter_draw_begin_a_longer_one():
    x = torch.rand(32, 3, 4, 4)
    long = coding.rate_encode(x, 16, generator=torch.Generator().manual_seed(4))
    for t in (1, 5, 16):
        assert torch.equal(coding.rate_encode(x, t, generator=torch.Generator().manual_seed(4)), long[:t])
    g = torch.Generator().manual_seed(4)
    chunks = torch.cat([coding.rate_encode(x, n, generator=g) for n in (3, 6, 7)])
    assert torch.equal(chunks, long)


def test_latency_input_gets_one_run_per_step():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 16), spikec.IF(threshold=0.3), nn.Linear(16, 4), spikec.IF(threshold=0.3))
    clf = spikec.SpikingClassifier(net, timesteps=8, encoding="latency", readout="first_spike").eval()
    assert not clf.prefix_consistent
    x, y = torch.rand(40, 6), torch.randint(0, 4, (40,))
    with pytest.raises(UsageError, match="latency input"):
        run_steps(clf, x, [4, 8])
    ev = evaluate_steps(clf, (x, y), [4, 8], batch_size=40, chunk=3)
    assert not ev.one_pass and ev.simulated_steps == 12
    for T in (4, 8):
        accuracy, rec = _separate(clf, (x, y), T, 40)
        assert ev[T].accuracy == accuracy and ev[T].total_spikes == rec.total_spikes


def test_neurons_and_pools_carry_their_state_across_calls():
    from spikec.conversion.maxpool import SpikeMaxPool

    torch.manual_seed(4)
    x = (torch.rand(9, 3, 2, 4, 4) > 0.6).float()
    for layer in (spikec.LIF(beta=0.7, threshold=0.6), spikec.IF(threshold=1.5, reset="zero"),
                  SpikeMaxPool(2, method="count"), SpikeMaxPool(2, method="gate")):
        whole = layer(x * 0.9)
        spikec.reset(layer)
        parts = torch.cat([layer(x[a:b] * 0.9) for a, b in ((0, 2), (2, 3), (3, 9))])
        assert torch.equal(parts, whole), type(layer).__name__
        spikec.reset(layer)


def test_bad_arguments_are_one_line_usage_errors(lenet_snn, digits):
    ann, snn = lenet_snn
    with pytest.raises(UsageError, match="timesteps"):
        evaluate_steps(snn, digits[1], [0, 4])
    with pytest.raises(UsageError, match="time chunk"):
        evaluate_steps(snn, digits[1], [4], chunk=0)
    with pytest.raises(UsageError, match="SpikingClassifier"):
        evaluate_steps(ann, digits[1], [4])


def test_cli_eval_reads_several_steps_from_one_run(lenet_snn, digits, tmp_path, capsys):
    ann, snn = lenet_snn
    path = save_checkpoint(tmp_path / "snn.pt", rate_snn_checkpoint(snn, ann_checkpoint(ann, dataset=digits[2].to_dict())))
    code = main(["eval", str(path), "--timesteps", "8,2", "--time-chunk", "3", "--batch-size", "120", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    ev = evaluate_steps(snn, load_dataset("digits")[1], [2, 8], batch_size=120)
    assert result["timesteps"] == 8 and result["accuracy"] == ev[8].accuracy and result["time_chunk"] == 3
    assert result["steps"] == {str(T): {"accuracy": ev[T].accuracy, "spikes_per_neuron": ev[T].spikes_per_neuron}
                               for T in (2, 8)}
    assert "T=8" in out and "one run of 8 steps" in out
    assert main(["eval", str(path), "--time-chunk", "0"]) == 2
    assert "--time-chunk must be >= 1" in capsys.readouterr().err


def test_cli_convert_time_chunk_and_device(lenet_snn, digits, tmp_path, capsys):
    """``spikec convert --time-chunk`` gives the unchunked figures; a bad or absent ``--device`` is one line, exit 2."""
    ann, _ = lenet_snn
    path = save_checkpoint(tmp_path / "ann.pt", ann_checkpoint(ann, dataset=digits[2].to_dict()))
    common = ["convert", str(path), "--timesteps", "2,5", "--calib", "64", "--batch-size", "120", "--json"]
    results = []
    for extra in (["--time-chunk", "2"], ["--time-chunk", "5", "--device", "cpu"]):
        assert main(common + extra) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert results[0]["snn_accuracy"] == results[1]["snn_accuracy"]
    assert results[0]["spikes_per_neuron"] == results[1]["spikes_per_neuron"]
    assert main(common + ["--time-chunk", "0"]) == 2
    assert "--time-chunk must be >= 1" in capsys.readouterr().err
    assert main(common + ["--device", "tpu"]) == 2
    assert "--device 'tpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(common + ["--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err

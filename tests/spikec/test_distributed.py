"""Two gloo processes reach the weights one process reaches with the same global batch and seed."""
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import spikec
from spikec import distributed
from spikec.training import train


def make_model():
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def make_snn():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), spikec.LIF(beta=0.8, threshold=0.5), nn.Linear(32, 10))
    return spikec.SpikingClassifier(net, timesteps=4)


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(203, 1, 8, 8, generator=g)  # 203 = 6 batches of 32 + 11: the last batch splits 6/5
    y = torch.randint(0, 10, (203,), generator=g)
    return x, y


def _worker(rank, world, init_file, kind, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = make_model() if kind == "ann" else make_snn()
    history = train(model, data(), epochs=2, lr=1e-2, batch_size=32, seed=5, progress=False)
    if rank == 0:
        torch.save({"state": model.state_dict(), "loss": history[-1].loss, "acc": history[-1].train_accuracy}, out)
    distributed.shutdown()


@pytest.mark.parametrize("kind", ["ann", "snn"])
def test_two_processes_equal_one(tmp_path, kind):
    single = make_model() if kind == "ann" else make_snn()
    ref = train(single, data(), epochs=2, lr=1e-2, batch_size=32, seed=5, progress=False)
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), kind, str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    for name, value in single.state_dict().items():
        assert torch.allclose(got["state"][name], value, atol=1e-5, rtol=1e-4), name
    assert got["loss"] == pytest.approx(ref[-1].loss, rel=1e-5)
    assert got["acc"] == pytest.approx(ref[-1].train_accuracy)
    # and training actually moved the weights
    assert not torch.allclose(got["state"]["net.net.1.weight" if kind == "snn" else "1.weight"],
                              (make_model() if kind == "ann" else make_snn()).state_dict()[
                                  "net.net.1.weight" if kind == "snn" else "1.weight"])


def test_shards_cover_a_batch_once():
    for n in (1, 5, 32, 33):
        parts = [distributed.shard(n, r, 3) for r in range(3)]
        covered = [i for p in parts for i in range(n)[p]]
        assert covered == list(range(n))
        assert max(p.stop - p.start for p in parts) - min(p.stop - p.start for p in parts) <= 1


def test_outside_torchrun_is_single_process():
    distributed.shutdown()  # nothing to leave: a no-op
    assert distributed.rank_and_size() == (0, 1)
    assert distributed.init_from_env() is False
    assert distributed.all_sum(2.0, 3.0) == [2.0, 3.0]


def test_cli_train_under_torchrun(tmp_path):
    out = tmp_path / "ann.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "spikec.cli.main", "train", "--model", "mlp", "--dataset", "digits", "--epochs", "1",
           "--out", str(out), "--json", "--threads", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    json_lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
    assert len(json_lines) == 1  # rank 0 alone reports
    assert out.exists()

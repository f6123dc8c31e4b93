"""``spikec compress`` on a rate-converted checkpoint: numbers out, a checkpoint ``spikec eval`` reads."""
import json

import pytest
import torch

from spikec.checkpoint import ann_checkpoint, load_model, save_checkpoint
from spikec.cli.main import main

rate = pytest.importorskip("spikec.conversion.rate")


@pytest.fixture(scope="module")
def rate_ckpt(tmp_path_factory):
    from spikec.data import load_dataset
    from spikec.models import build_model
    from spikec.training import train

    torch.manual_seed(0)
    tr, _, _ = load_dataset("digits")
    ann = build_model("mlp", (1, 8, 8), 10, hidden=(24,), batch_norm=False)
    train(ann, tr, epochs=3, lr=1e-2, progress=False)
    snn = rate.convert_rate(ann, tr.tensors[0][:256], timesteps=6)
    path = tmp_path_factory.mktemp("c") / "snn.pt"
    return str(save_checkpoint(path, rate.rate_snn_checkpoint(snn, ann_checkpoint(ann))))


def _json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_compress_reports_and_saves_a_loadable_checkpoint(rate_ckpt, tmp_path, capsys):
    out = str(tmp_path / "snn_c.pt")
    rc = main(["compress", rate_ckpt, "--density", "0.3", "--bits", "4", "--attention", "--epochs", "1",
               "--quant-epochs", "1", "--timesteps", "4", "--out", out, "--json"])
    assert rc == 0
    r = _json(capsys)
    for key in ("accuracy_before", "accuracy_after", "density", "weight_bits", "compression_ratio", "spikes_before",
                "spikes_after", "sops_before", "sops_after", "checkpoint"):
        assert key in r
    assert r["checkpoint"] == out and r["weight_bits"] == 4
    assert r["density"] <= 0.3 + 1e-6 and r["compression_ratio"] > 1
    # integer scales and biases where they sit on a grid: never larger than with 32-bit floats
    assert r["compression_ratio"] >= r["compression_ratio_float_side"] > 1
    model, ckpt = load_model(out)
    assert ckpt["kind"] == "rate_snn" and "compression" in ckpt
    weights = [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Linear)]
    total = sum(w.numel() for w in weights)
    assert sum(int((w != 0).sum()) for w in weights) / total == pytest.approx(r["density"])
    assert all(w.unique().numel() <= 16 for w in weights)
    masks = ckpt["compression"]["layers"]
    assert sum(int(e["mask"].sum()) for e in masks.values()) == round(0.3 * total)
    assert main(["eval", out, "--json"]) == 0
    assert _json(capsys)["accuracy"] == pytest.approx(r["accuracy_after"])


def test_bad_flags_fail_with_one_line(rate_ckpt, capsys):
    assert main(["compress", rate_ckpt, "--density", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--density" in err[0]
    assert main(["compress", rate_ckpt, "--augment", "--epochs", "1", "--timesteps", "2"]) == 2  # 8x8 digits
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "(1, 8, 8)" in err[0]
    assert main(["compress", rate_ckpt + ".missing"]) == 1
    assert "not found" in capsys.readouterr().err


def test_compress_a_ttfs_checkpoint_keeps_its_kind(tmp_path, capsys):
    ttfs = pytest.importorskip("spikec.conversion.ttfs")
    from spikec.data import load_dataset
    from spikec.models import build_model
    from spikec.training import train

    torch.manual_seed(0)
    tr, _, _ = load_dataset("digits")
    ann = build_model("mlp", (1, 8, 8), 10, hidden=(16,), batch_norm=False)
    train(ann, tr, epochs=2, lr=1e-2, progress=False)
    snn = ttfs.convert_ttfs(ann, tr.tensors[0][:256], time_bits=3)
    src = str(save_checkpoint(tmp_path / "t.pt", ttfs.ttfs_checkpoint(snn, ann)))
    out = str(tmp_path / "t_c.pt")
    assert main(["compress", src, "--density", "0.2", "--bits", "3", "--epochs", "1", "--quant-epochs", "0",
                 "--out", out, "--json"]) == 0
    r = _json(capsys)
    model, ckpt = load_model(out)
    assert ckpt["kind"] == "ttfs_snn" and r["weight_bits"] == 3
    weights = [m.weight.detach() for n, m in model.named_modules() if n.endswith(".synapses.0")]
    assert all(w.unique().numel() <= 8 for w in weights)
    total = sum(w.numel() for w in weights)
    assert sum(int((w != 0).sum()) for w in weights) <= round(0.2 * total)


def test_layer_density_prunes_each_named_layer_to_its_own_share(rate_ckpt, capsys):
    from spikec.compress.layers import synaptic_layers

    model, _ = load_model(rate_ckpt)
    first, last = list(synaptic_layers(model))
    assert main(["compress", rate_ckpt, "--layer-density", "nope=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--layer-density" in err[0] and "'nope'" in err[0] and first in err[0]
    rc = main(["compress", rate_ckpt, "--density", "0.5", "--layer-density", f"{first}=0.2", "--bits", "0",
               "--epochs", "1", "--timesteps", "4", "--json"])
    assert rc == 0
    layer_density = _json(capsys)["layer_density"]
    assert layer_density[first] == pytest.approx(0.2, abs=1e-3)
    assert layer_density[last] == pytest.approx(0.5, abs=1e-3)


def test_weight_pruning_that_frees_no_tiles_says_which_flags_do(rate_ckpt, capsys):
    hint = "weight-level zeros stay on their tiles"
    common = ["compress", rate_ckpt, "--density", "0.3", "--bits", "0", "--epochs", "0", "--quant-epochs", "0",
              "--timesteps", "4"]
    assert main(common) == 0
    out = capsys.readouterr().out
    assert "crossbar tiles" in out and "0 freed (0%)" in out and hint in out
    assert main(common + ["--granularity", "channel"]) == 0
    assert hint not in capsys.readouterr().out


def test_tile_row_pruning_frees_tiles_when_rows_are_packed(rate_ckpt, tmp_path, capsys):
    """Rows pruned per column tile leave the fixed layout's tiles occupied (any kept row in a tile holds it);
    packed, each column tile keeps about the density's share of its rows, so most tiles go."""
    hw = tmp_path / "small_tiles.toml"
    hw.write_text("[crossbar]\ntile_rows = 8\ntile_cols = 12\n")  # 8 rows x 2 neurons (3 cells per weight)
    common = ["compress", rate_ckpt, "--density", "0.3", "--bits", "0", "--epochs", "0", "--quant-epochs", "0",
              "--timesteps", "4", "--structure", "tile-row", "--hardware", str(hw), "--json"]
    assert main(common) == 0
    out = capsys.readouterr().out
    fixed = json.loads(out.strip().splitlines()[-1])["tiles"]
    assert main(common + ["--pack-rows"]) == 0
    out_packed = capsys.readouterr().out
    packed = json.loads(out_packed.strip().splitlines()[-1])["tiles"]
    assert f"with --pack-rows (a row address table lookup per drive) the same network takes {packed['tiles_after']} tiles" in out
    assert "with --pack-rows" not in out_packed
    assert fixed["tiles_before"] == packed["tiles_before"] == 9 * 12 + 4 * 5  # fc1: 64 rows + bias, 24 neurons; fc2: 24 + bias, 10
    assert packed["freed_fraction"] > 0.5
    assert packed["freed_fraction"] > fixed["freed_fraction"] + 0.3


def test_an_interrupted_compression_resumes_to_the_same_checkpoint(rate_ckpt, tmp_path, capsys, monkeypatch):
    from spikec.compress.resume import CompressState

    flags = ["--density", "0.3", "--bits", "4", "--epochs", "2", "--quant-epochs", "1", "--timesteps", "4", "--json"]
    whole = str(tmp_path / "whole.pt")
    assert main(["compress", rate_ckpt, *flags, "--out", whole]) == 0
    assert not (tmp_path / "whole.pt.state").exists()  # a finished run leaves no state behind
    capsys.readouterr()

    cut = str(tmp_path / "cut.pt")
    assert main(["compress", rate_ckpt, "--resume", *flags]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    assert main(["compress", rate_ckpt, "--resume", *flags, "--out", cut]) == 2
    assert "no compression state" in capsys.readouterr().err

    save = CompressState.save

    def save_then_stop(self, phase, epoch, *args, **kwargs):
        save(self, phase, epoch, *args, **kwargs)
        if (phase, epoch) == ("prune", 1):
            raise RuntimeError("interrupted")

    monkeypatch.setattr(CompressState, "save", save_then_stop)
    assert main(["compress", rate_ckpt, *flags, "--out", cut]) == 1
    monkeypatch.setattr(CompressState, "save", save)
    assert (tmp_path / "cut.pt.state").exists() and not (tmp_path / "cut.pt").exists()
    capsys.readouterr()
    assert main(["compress", rate_ckpt, "--density", "0.5", *flags[2:], "--out", cut, "--resume"]) == 2
    assert "written by a different run (differs in: config)" in capsys.readouterr().err
    assert main(["compress", rate_ckpt, *flags, "--out", cut, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "prune epoch 1" not in out and "prune epoch 2" in out
    assert not (tmp_path / "cut.pt.state").exists()
    a, b = load_model(whole)[0].state_dict(), load_model(cut)[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_compressed_checkpoint_is_quantized_again_under_its_mask_taught_by_the_dense_one(
        rate_ckpt, tmp_path, capsys, monkeypatch):
    import spikec.compress as compress_pkg

    first = str(tmp_path / "c3.pt")
    assert main(["compress", rate_ckpt, "--density", "0.3", "--bits", "3", "--epochs", "1", "--quant-epochs", "1",
                 "--timesteps", "4", "--out", first, "--json"]) == 0
    r1 = _json(capsys)
    taught_by = {}
    real = compress_pkg.compress_

    def spy(model, config, train_data=None, teacher=None, **kw):
        taught_by["weights"] = [p.detach().clone() for n, p in teacher.named_parameters() if n.endswith("weight")]
        return real(model, config, train_data, teacher=teacher, **kw)

    monkeypatch.setattr(compress_pkg, "compress_", spy)
    second = str(tmp_path / "c4.pt")
    assert main(["compress", first, "--density", "1", "--bits", "4", "--epochs", "1", "--distill", "0.5",
                 "--teacher", rate_ckpt, "--timesteps", "4", "--out", second, "--json"]) == 0
    r2 = _json(capsys)
    dense, _ = load_model(rate_ckpt)
    assert all(torch.equal(a, b) for a, b in zip(taught_by["weights"],
                                                  [p for n, p in dense.named_parameters() if n.endswith("weight")]))
    assert r1["weight_bits"] == 3 and r2["weight_bits"] == 4
    _, c1 = load_model(first)
    model2, c2 = load_model(second)
    layers2 = dict(model2.named_modules())
    for name, entry in c1["compression"]["layers"].items():
        assert name in layers2, name
        w = layers2[name].weight.detach()
        assert bool((w[~entry["mask"].to(torch.bool)] == 0).all())  # the first run's zeros stay
        assert torch.equal(c2["compression"]["layers"][name]["mask"], entry["mask"])
    assert r2["density"] <= r1["mask_density"] + 1e-9  # within the mask (4 bits round fewer weights to zero)
    # the same mask at one more bit per stored value
    assert r2["compression_ratio"] < r1["compression_ratio"]
    assert max(int(m.weight.unique().numel()) for m in layers2.values() if isinstance(m, torch.nn.Linear)) > 8


def test_a_teacher_without_the_students_layers_is_refused_in_one_line(rate_ckpt, tmp_path, capsys):
    from spikec.models import build_model

    other = build_model("mlp", (1, 8, 8), 10, hidden=(12,), batch_norm=False)
    snn = rate.convert_rate(other, torch.rand(16, 1, 8, 8), timesteps=4)
    path = str(save_checkpoint(tmp_path / "other.pt", rate.rate_snn_checkpoint(snn, ann_checkpoint(other))))
    assert main(["compress", rate_ckpt, "--epochs", "0", "--teacher", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--teacher" in err[0] and path in err[0] and "layer" in err[0]
    assert main(["compress", rate_ckpt, "--teacher", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--teacher" in err[0] and "missing.pt" in err[0]

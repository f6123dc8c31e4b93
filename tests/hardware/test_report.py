"""The energy study and its files: keys, numbers that add up, ablation directions, HTML, HDF5, CLI."""
import base64
import json
import re

import h5py
import pytest

from spikec.checkpoint import save_checkpoint
from spikec.cli.main import main
from spikec.conversion.ttfs import ttfs_checkpoint
from spikec.hardware.config import HardwareConfig
from spikec.hardware.report import FIGURES, write_report
from spikec.hardware.study import energy_study

TOP_KEYS = {"accuracy", "energy_per_inference_j", "latency_s", "spikes_per_inference", "layers", "ablations",
            "baselines", "tta", "variation", "config"}
COMPONENTS = {"total", "crossbar", "neuron", "driver", "buffer", "static"}


@pytest.fixture(scope="module")
def study(mlp_snn, digits):
    x, y = digits[1].tensors
    return energy_study(mlp_snn, x[:60], y[:60], digits[0].tensors[0][:128], HardwareConfig(tta_fraction=0.5),
                        chips=2, sigmas=(0.0, 0.2), tta_fractions=(0.3, 1.0), rate_timesteps=16,
                        iso_accuracy=False, progress=False)


def test_report_keys_and_sums(study):
    r = study.report
    assert TOP_KEYS <= set(r)
    assert set(r["energy_per_inference_j"]) == COMPONENTS
    e = r["energy_per_inference_j"]
    assert e["total"] == pytest.approx(sum(e[k] for k in COMPONENTS - {"total"}), rel=1e-9, abs=0)
    assert all(v > 0 for v in e.values())
    assert e["total"] == pytest.approx(sum(l["energy_per_inference_j"]["total"] for l in r["layers"]), rel=1e-9, abs=0)
    assert r["latency_s"] == pytest.approx(sum(l["latency_s"] for l in r["layers"]), rel=1e-9, abs=0)
    for layer in r["layers"]:
        assert COMPONENTS <= set(layer["energy_per_inference_j"])
        if layer["name"] != "readout":  # the readout is not a spiking module in the SNN
            assert layer["snn_spikes_per_inference"] > 0
        assert layer["tiles"]["tiles"] >= 1 and layer["latency_s"] > 0
    assert set(r["ablations"]) == {"no_power_gating", "no_tta"}
    for a in r["ablations"].values():
        assert set(a["energy_per_inference_j"]) == COMPONENTS and a["latency_s"] > 0
    assert {"rate_snn_crossbar", "ann_digital_fp32", "ann_digital_int8", "ann_reram_adc"} <= set(r["baselines"])
    for b in r["baselines"].values():
        assert b["energy_per_inference_j"]["total"] > 0
    assert [row["fraction"] for row in r["tta"]] == [0.3, 1.0]
    assert {"fraction", "accuracy", "energy_j", "latency_s"} <= set(r["tta"][0])
    rows = {(v["sigma"], v["compensation"]) for v in r["variation"]}
    assert rows == {(s, c) for s in (0.0, 0.2) for c in ("none", "mfta", "ideal")}
    assert all({"sigma", "compensation", "accuracy_mean", "accuracy_std", "chips"} <= set(v) for v in r["variation"])
    assert r["config"] == HardwareConfig(tta_fraction=0.5).to_dict()
    json.dumps(r)


def test_ablations_go_the_right_way(study):
    r = study.report
    main_e = r["energy_per_inference_j"]["total"]
    assert r["ablations"]["no_power_gating"]["energy_per_inference_j"]["total"] > main_e
    assert r["ablations"]["no_tta"]["energy_per_inference_j"]["total"] > main_e
    assert r["ablations"]["no_tta"]["latency_s"] > r["latency_s"]
    # without variation every chip is the nominal one: no spread, and uncompensated it is the main result
    # (a threshold fit may still correct the nominal chip's rounding, so compensated rows may differ)
    zero = [v for v in r["variation"] if v["sigma"] == 0.0]
    assert all(v["accuracy_std"] == 0 for v in zero)
    assert [v["accuracy_mean"] for v in zero if v["compensation"] == "none"] == [r["accuracy"]]


def test_report_files(study, tmp_path):
    out = tmp_path / "rep"
    write_report(study, out)
    assert sorted(p.name for p in out.iterdir()) == ["events.h5", "figures", "report.html", "report.json"]
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(f"{f}.png" for f in FIGURES)
    assert json.loads((out / "report.json").read_text())["accuracy"] == study.report["accuracy"]
    page = (out / "report.html").read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == len(FIGURES)
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "http://" not in page and "https://" not in page
    with h5py.File(out / "events.h5") as f:
        names = [l["name"] for l in study.report["layers"]]
        assert sorted(f["layers"]) == sorted(names)
        samples = study.report["samples"]
        spikes = sum(f["layers"][n]["spike_time_histogram"][()].sum() for n in names)
        assert spikes == pytest.approx(study.report["spikes_per_inference"] * samples * study.report["chips"], rel=1e-9, abs=0)
        assert f["samples"]["energy_j"].shape == (study.report["chips"], samples)
        assert f["samples"]["energy_j"][()].mean() == pytest.approx(study.report["energy_per_inference_j"]["total"], rel=1e-9, abs=0)
    assert not list(tmp_path.rglob("*.tmp"))


def test_cli_energy(mlp_snn, tmp_path, capsys):
    path = tmp_path / "snn.pt"
    save_checkpoint(path, ttfs_checkpoint(mlp_snn))
    out = tmp_path / "report"
    rc = main(["energy", str(path), "--dataset", "digits", "--hardware", "twin-column", "--chips", "2",
               "--sigmas", "0,0.2", "--samples", "40", "--calib", "64", "--rate-timesteps", "8",
               "--no-iso-accuracy", "--no-progress", "--out", str(out), "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"accuracy", "energy_per_inference_j", "latency_s", "saving_vs_rate_snn", "tiles"} <= set(summary)
    assert (out / "report.json").exists() and (out / "events.h5").exists()


def test_cli_errors(mlp_snn, tmp_path, capsys):
    path = tmp_path / "snn.pt"
    save_checkpoint(path, ttfs_checkpoint(mlp_snn))
    assert main(["energy", str(path), "--chips", "0"]) == 2
    assert main(["energy", str(path), "--threads", "0"]) == 2
    capsys.readouterr()
    assert main(["energy", str(path), "--chips", "0"]) == 2
    bad = tmp_path / "hw.toml"
    bad.write_text("tile_rowz = 4\n")
    assert main(["energy", str(path), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--chips" in err[0] and "tile_rowz" in err[1]
    ann = tmp_path / "ann.pt"
    save_checkpoint(ann, {"kind": "ann", "arch": "mlp", "arch_config": {"input_shape": [1, 8, 8], "num_classes": 10},
                          "state_dict": {}})
    assert main(["energy", str(ann)]) == 2
    assert "needs a ttfs_snn" in capsys.readouterr().err
    assert main(["energy", str(path), "--tile-budget", "0"]) == 2
    assert main(["energy", str(path), "--tile-budget", "1", "--samples", "20", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--tile-budget must be >= 1" in err[0]
    assert "tile budget 1 (--tile-budget, tile_budget) is smaller than" in err[1]


def test_cli_energy_packs_rows_pruned_per_column_tile(mlp_snn, tmp_path, capsys):
    """A TTFS MLP pruned in tile-row groups: packed, its tiles fall and so do leakage and energy; the spikes,
    hence the accuracy, are the same (packing moves cells, not weights)."""
    import copy

    from spikec.compress import PruneConfig, prune_
    from spikec.compress.masks import remove_mask_
    from spikec.compress.layers import synaptic_layers

    hw = tmp_path / "small_tiles.toml"
    hw.write_text("[crossbar]\ntile_rows = 16\ntile_cols = 24\n")  # 16 rows x 4 neurons
    snn = copy.deepcopy(mlp_snn)
    prune_(snn, PruneConfig(density=0.3, granularity="tile-row", tile_rows=16, tile_cols=24, cells_per_weight=3))
    for m in synaptic_layers(snn).values():
        remove_mask_(m)
    path = tmp_path / "pruned.pt"
    save_checkpoint(path, ttfs_checkpoint(snn))
    common = ["energy", str(path), "--config", str(hw), "--chips", "1", "--sigmas", "0", "--samples", "30",
              "--calib", "64", "--rate-timesteps", "8", "--no-iso-accuracy", "--no-progress", "--json"]
    runs, hints = {}, {}
    for packed in (False, True):
        assert main(common + ["--out", str(tmp_path / f"r{packed}")] + (["--pack-rows"] if packed else [])) == 0
        out = capsys.readouterr().out.strip().splitlines()
        runs[packed] = json.loads(out[-1])
        hints[packed] = [line for line in out if "with --pack-rows" in line]
    assert hints[False] == [f"  with --pack-rows (a row address table lookup per drive) the same network takes {runs[True]['tiles']} tiles"]
    assert hints[True] == []
    assert runs[True]["tiles"] < 0.8 * runs[False]["tiles"]  # 57 against 80 (ramp rows stay in every column tile)
    assert runs[True]["accuracy"] == runs[False]["accuracy"]
    # the same cells conduct, the same drivers fire: packing saves the freed tiles' leakage and pays a row
    # address table read per drive (part of the buffer)
    assert runs[False]["row_table_energy_per_inference_j"] == 0
    table = runs[True]["row_table_energy_per_inference_j"]
    e = {p: json.loads((tmp_path / f"r{p}" / "report.json").read_text())["energy_per_inference_j"] for p in (False, True)}
    for k in ("crossbar", "neuron", "driver"):
        assert e[True][k] == pytest.approx(e[False][k], rel=1e-12)
    assert table > 0 and e[True]["buffer"] - e[False]["buffer"] == pytest.approx(table, rel=1e-9)
    assert e[True]["static"] < e[False]["static"]

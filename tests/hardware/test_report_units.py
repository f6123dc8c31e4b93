"""report.json in SI units with energy_per_mac_j for every design; report.html in nJ, us and pJ/MAC, headline first."""
import json
import re

import pytest

from spikec.checkpoint import save_checkpoint
from spikec.cli.main import main
from spikec.conversion.ttfs import ttfs_checkpoint
from spikec.hardware.baselines import RateBaselineOptions
from spikec.hardware.config import HardwareConfig
from spikec.hardware.report import render_html, write_report
from spikec.hardware.study import energy_study


@pytest.fixture(scope="module")
def study(mlp_snn, digits):
    x, y = digits[1].tensors
    return energy_study(mlp_snn, x[:50], y[:50], digits[0].tensors[0][:64], HardwareConfig(), chips=1,
                        sigmas=(0.0,), compensations=("none",), tta_fractions=(1.0,), rate_timesteps=8,
                        iso_accuracy=False, progress=False, train=digits[0].tensors,
                        rate_options=RateBaselineOptions(timesteps=(4, 8), calib_samples=64, qcfs_epochs=0))


def _designs(node, path=""):
    if isinstance(node, dict):
        if isinstance(node.get("energy_per_inference_j"), dict) and "total" in node["energy_per_inference_j"]:
            yield path, node
        for k, v in node.items():
            yield from _designs(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _designs(v, f"{path}/{i}")


def test_every_design_has_energy_per_mac(study, tmp_path):
    write_report(study, tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    macs = report["ann_macs"]
    assert macs == 64 * 48 + 48 * 10
    designs = dict(_designs(report))
    for name in ("", "/ablations/no_power_gating", "/baselines/rate_snn_crossbar", "/baselines/ann_digital_int8",
                 "/baselines/ann_reram_adc", "/comparison/pe", "/comparison/rate/percentile", "/comparison/rate/qcfs"):
        assert name in designs, name
    for name, d in designs.items():
        total = d["energy_per_inference_j"]["total"]
        assert d["energy_per_mac_j"] == pytest.approx(total / macs, rel=1e-12, abs=0), name
    # SI in the JSON: an energy per inference of this MLP is well below a microjoule, a latency below a millisecond
    assert 1e-12 < report["energy_per_inference_j"]["total"] < 1e-6 and 1e-9 < report["latency_s"] < 1e-3
    assert report["calibration"]["measured"]["energy_per_mac_j"] == 0.257e-12


def test_html_is_in_human_units_with_the_headline_first(study):
    r = study.report
    page = render_html(r, {})
    headings = re.findall(r"<h2>(.*?)</h2>", page)
    assert headings[0].startswith("The comparison that matters")
    head = page[page.index(headings[0]): page.index("<h2>Summary</h2>")]
    pe = r["comparison"]["pe"]
    assert f"<td>{pe['energy_per_inference_j']['total'] * 1e9:.4g}</td>" in head  # nJ
    assert f"<td>{pe['energy_per_mac_j'] * 1e12:.4g}</td>" in head  # pJ/MAC
    assert f"<td>{pe['latency_s'] * 1e6:.4g}</td>" in head  # us
    assert f"{pe['accuracy'] * 100:.2f}%" in head
    assert "34.7%" in head and "ASTERS" in head and "share of the savings" in head
    for method, rate in r["comparison"]["rate"].items():
        assert f"{rate['pe_saving'] * 100:+.1f}%" in head and f"T = {rate['timesteps']}" in head
    assert not re.search(r"<td>-?\d\.?\d*e-\d\d</td>", head)  # no raw SI numbers in the headline
    assert "energy per MAC (pJ)" in page and "average power (mW)" in page
    assert f"<td>{r['energy_per_inference_j']['total'] * 1e9:.4g}</td>" in page


def test_html_without_comparison(study):
    r = {k: v for k, v in study.report.items() if k != "comparison"}
    page = render_html(r, {})
    assert re.findall(r"<h2>(.*?)</h2>", page)[0] == "PE against the rate SNN on the same crossbar"


def test_cli_preset_flags(mlp_snn, tmp_path, capsys):
    path = tmp_path / "snn.pt"
    save_checkpoint(path, ttfs_checkpoint(mlp_snn))
    out = tmp_path / "rep"
    rc = main(["energy", str(path), "--preset", "yan-vlsi2019", "--wakeup", "--chips", "1", "--sigmas", "0",
               "--samples", "20", "--calib", "32", "--rate-timesteps", "8", "--no-iso-accuracy", "--no-progress",
               "--out", str(out), "--json"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["wakeup_on_input"] is True and report["config"]["tile_rows"] == 256
    assert report["calibration"]["ratio"]["energy_per_mac"] == pytest.approx(1.0, abs=0.01)
    capsys.readouterr()
    assert main(["energy", str(path), "--preset", "yan-2019"]) == 2
    assert main(["energy", str(path), "--rate-methods", "percentile,ttfs"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "yan-vlsi2019" in err[0] and "--rate-methods" in err[1] and "ttfs" in err[1]
    for bad in ("1.5", "often"):
        assert main(["energy", str(path), "--rate-stop-saving", bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--rate-stop-saving" in err[0] and bad in err[0]


def test_cli_tta_fraction(mlp_snn, tmp_path, capsys):
    """--tta-fraction auto picks on the training draw and says so; a number is taken as is; junk is exit 2."""
    path = tmp_path / "snn.pt"
    save_checkpoint(path, ttfs_checkpoint(mlp_snn))
    common = ["--chips", "1", "--sigmas", "0", "--samples", "20", "--calib", "32", "--rate-timesteps", "8",
              "--no-iso-accuracy", "--no-progress", "--json"]
    out = tmp_path / "auto"
    assert main(["energy", str(path), "--tta-fraction", "auto", "--out", str(out), *common]) == 0
    report = json.loads((out / "report.json").read_text())
    sel = report["tta_selection"]
    assert sel["samples"] == 32 and report["config"]["tta_fraction"] == sel["fraction"]
    last = sel["curve"][-1]  # the scan ends at the chosen fraction or at the first one below it that failed
    assert last["fraction"] == sel["fraction"] or last["accuracy"] < sel["accuracy_without_tta"] - sel["tolerance"]
    assert all(r["accuracy"] >= sel["accuracy_without_tta"] - sel["tolerance"] for r in sel["curve"]
               if r["fraction"] >= sel["fraction"])
    assert "TTA fraction" in (out / "report.html").read_text()
    out2 = tmp_path / "fixed"
    assert main(["energy", str(path), "--tta-fraction", "0.9", "--out", str(out2), *common]) == 0
    fixed = json.loads((out2 / "report.json").read_text())
    assert fixed["config"]["tta_fraction"] == 0.9 and "tta_selection" not in fixed
    capsys.readouterr()
    assert main(["energy", str(path), "--tta-fraction", "fast"]) == 2
    assert main(["energy", str(path), "--tta-fraction", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("--tta-fraction" in e for e in err)

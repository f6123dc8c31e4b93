"""``spikec run --quick``: the whole pipeline writes every artifact and a consistent summary."""
import json

import h5py
import nir
import pytest

from spikec.checkpoint import load_checkpoint
from spikec.cli.main import main


def test_quick_run_writes_every_artifact(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--quick", "--out", str(out), "--json", "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    names = set(summary["artifacts"])
    assert {"ann.pt", "snn_rate.h5", "snn_ttfs.h5", "snn_rate_compressed.h5", "snn_ttfs_compressed.h5",
            "snn_rate.nir", "report"} <= names
    assert json.loads((out / "summary.json").read_text())["ann_accuracy"] == summary["ann_accuracy"]
    assert summary["ann_accuracy"] > 0.9
    assert load_checkpoint(out / "snn_ttfs.h5")["kind"] == "ttfs_snn"
    for coding in ("rate", "ttfs"):
        c = summary["compressed"][coding]
        assert c["weight_bits"] == 4 and c["density"] <= 0.1 + 1e-9
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["energy_per_inference_j"]["total"] > 0
    with h5py.File(out / "report" / "events.h5", "r"):
        pass
    graph = nir.read(str(out / "snn_rate.nir"))
    assert any(isinstance(n, (nir.IF, nir.LIF)) for n in graph.nodes.values())
    assert 0 <= summary["nir"]["accuracy"] <= 1


def test_unknown_coding_is_a_usage_error(tmp_path, capsys):
    assert main(["run", "--coding", "rate,phase", "--out", str(tmp_path / "r")]) == 2
    assert "phase" in capsys.readouterr().err

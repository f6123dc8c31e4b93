"""models/, conversion/ and hardware/ exist only as spikec.models, spikec.conversion, spikec.hardware."""
import os
import subprocess
import sys


def _run(code, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_subpackages_import_only_under_spikec(tmp_path):
    ok = _run("import spikec.models, spikec.conversion, spikec.hardware; print(sorted(spikec.models.MODELS))", tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "['lenet', 'mlp', 'resnet', 'vgg']"
    for top in ("models", "conversion", "hardware"):
        bad = _run(f"import {top}", tmp_path)
        assert bad.returncode != 0
        assert f"No module named '{top}'" in bad.stderr

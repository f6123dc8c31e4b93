"""Hardware config: every default has a source, TOML round trip, preset file, one-line errors."""
import dataclasses

import pytest

from spikec.errors import UsageError
from spikec.hardware.config import HardwareConfig, config_to_toml, field_docs, load_config, preset


def test_every_default_states_its_source_and_unit():
    for row in field_docs():
        assert row["source"].strip(), row["name"]
        assert row["unit"].strip(), row["name"]
        source = row["source"].lower()
        assert any(w in source for w in ("assumption", "derived", "asters", "issue")) or any(c.isdigit() for c in source), row


def test_issue_defaults():
    c = HardwareConfig()
    assert (c.tile_rows, c.tile_cols, c.pairs_per_tile) == (128, 128, 64)
    assert c.r_on_ohm == 100e3 and c.r_off_ohm == 1.7e6
    assert c.clock_hz == 50e6 and c.window_bits == 6 and c.window_steps == 64
    assert c.conv_copies == 1
    assert (c.fp32_mult_j, c.fp32_add_j, c.int8_mult_j, c.int8_add_j) == (3.7e-12, 0.9e-12, 0.2e-12, 0.03e-12)


def test_toml_round_trip(tmp_path):
    c = HardwareConfig(tile_rows=64, sigma=0.2, tta_time=40, power_gating=False, compensation="ideal")
    path = tmp_path / "hw.toml"
    c.save(path)
    assert load_config(path) == c
    assert "# tta_time" not in path.read_text()
    # unset optional values stay unset
    HardwareConfig().save(path)
    assert load_config(path).tta_time is None


def test_preset_file_is_the_defaults():
    assert preset("twin-column") == HardwareConfig()
    text = config_to_toml(HardwareConfig())
    assert "[crossbar]" in text and "NeuroSim" in text


def test_partial_file_keeps_base(tmp_path):
    path = tmp_path / "hw.toml"
    path.write_text("[crossbar]\ntile_rows = 32\n[timing]\nwindow_bits = 4\n")
    c = load_config(path, base=HardwareConfig(sigma=0.1))
    assert (c.tile_rows, c.window_bits, c.sigma) == (32, 4, 0.1)


@pytest.mark.parametrize("text, word", [
    ("tile_rowz = 3\n", "tile_rowz"),
    ("tile_cols = 127\n", "tile_cols"),
    ("tta_fraction = 1.5\n", "tta_fraction"),
    ("power_gating = 1\n", "power_gating"),
    ("window_bits = 2.5\n", "window_bits"),
    ("compensation = 'some'\n", "compensation"),
])
def test_bad_files_give_one_line_errors(tmp_path, text, word):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        load_config(path)
    assert word in str(err.value) and "\n" not in str(err.value)


def test_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(UsageError, match="no such"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(UsageError, match="twin-column"):
        preset("quad-column")


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        HardwareConfig().sigma = 1.0


def test_docs_list_every_parameter():
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "hardware-model.md").read_text()
    for row in field_docs():
        assert f"`{row['name']}`" in text, row["name"]

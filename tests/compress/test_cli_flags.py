"""``spikec compress`` flags of tile structure, regularizers, bit widths and variation: config fields and one-line errors."""
import pytest

from spikec.cli.main import build_parser, main


def _config(*flags):
    from spikec.cli.compress import build_config

    args = build_parser().parse_args(["compress", "missing.pt", *flags])
    return build_config(args)


def test_flags_reach_the_config():
    cfg = _config("--structure", "tile", "--regularizer", "hoyer-square", "--strength", "0.01", "--bits", "8,4,4",
                  "--noise-sigma", "0.2", "--noise-chips", "4", "--lipschitz", "0.05", "--threshold-jitter", "0.025")
    assert cfg.prune.granularity == "tile" and cfg.prune.regularizer == "hoyer-square" and cfg.prune.strength == 0.01
    assert (cfg.prune.tile_rows, cfg.prune.tile_cols) == (128, 128)
    assert cfg.quant.bits == (8, 4, 4) and cfg.quant.cell_levels == 0
    assert (cfg.robust.sigma, cfg.robust.chips, cfg.robust.lipschitz) == (0.2, 4, 0.05)
    assert cfg.robust.threshold_jitter == 0.025
    assert _config("--bits", "auto").quant.bits == "auto"
    assert _config("--layer-density", "features.0=0.5, features.3=1").prune.layer_density == (
        ("features.0", 0.5), ("features.3", 1.0))
    assert _config().robust is None
    assert _config().finetune.augment == "auto"
    assert _config("--augment").finetune.augment == "crop-flip"
    assert _config("--no-augment").finetune.augment == "none"
    assert _config().finetune.distill == 0.0
    ft = _config("--distill", "0.5", "--temperature", "2").finetune
    assert (ft.distill, ft.temperature) == (0.5, 2.0)


def test_hardware_sets_tiles_and_cell_levels(tmp_path):
    toml = tmp_path / "hw.toml"
    toml.write_text("[crossbar]\ntile_rows = 64\ntile_cols = 32\ncell_levels = 8\n")
    cfg = _config("--hardware", str(toml), "--structure", "tile-col", "--bits", "3")
    assert (cfg.prune.tile_rows, cfg.prune.tile_cols, cfg.quant.cell_levels) == (64, 32, 8)


def test_toml_round_trip_of_the_new_fields(tmp_path):
    from spikec.compress.config import dump_toml, load_toml

    cfg = _config("--structure", "tile-row", "--regularizer", "group-lasso", "--bits", "5,4", "--noise-sigma", "0.1",
                  "--no-augment", "--distill", "0.7", "--temperature", "3", "--layer-density", "a=0.5,b=0.25")
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(cfg))
    assert load_toml(str(path)) == cfg


@pytest.mark.parametrize("flags, words", [
    (["--bits", "4,x"], "--bits"),
    (["--bits", "4,9"], "--bits"),
    (["--structure", "tile", "--granularity", "row"], "--structure"),
    (["--hardware", "nope"], "--hardware"),
    (["--hardware", "twin-column", "--bits", "8"], "levels"),
    (["--noise-sigma", "-0.1"], "--noise-sigma"),
    (["--strength", "-1"], "--strength"),
    (["--noise-chips", "-2"], "--noise-chips"),
    (["--threshold-jitter", "-0.01"], "--threshold-jitter"),
    (["--distill", "1.5"], "--distill"),
    (["--temperature", "0"], "--temperature"),
    (["--layer-density", "features.0"], "--layer-density"),
    (["--layer-density", "features.0=0"], "--layer-density"),
    (["--layer-density", "a=0.5,a=0.4"], "twice"),
])
def test_bad_values_fail_with_one_line(flags, words, capsys):
    assert main(["compress", "missing.pt", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


@pytest.mark.parametrize("threads", [None, 3])
def test_compress_runs_on_one_thread_unless_told_and_restores_the_callers_count(monkeypatch, threads):
    import argparse

    import torch

    from spikec.cli import compress as cli

    seen = []
    monkeypatch.setattr(cli, "_run", lambda args: seen.append(torch.get_num_threads()) or {})
    caller = 2
    torch.set_num_threads(caller)
    if threads is not None:  # spikec.cli.main sets --threads before dispatching
        torch.set_num_threads(threads)
    cli.run(argparse.Namespace(threads=threads))
    assert seen == [cli.DEFAULT_THREADS if threads is None else threads]
    assert torch.get_num_threads() == (caller if threads is None else threads)


def test_hardware_sets_the_tile_groups_and_the_cells_of_the_noise():
    yan = _config("--hardware", "yan-vlsi2019", "--bits", "2", "--structure", "tile", "--noise-sigma", "0.1")
    from spikec.hardware.config import preset

    hw = preset("yan-vlsi2019")
    assert yan.prune.tile.rows == hw.tile_rows and yan.prune.tile.pairs == hw.neurons_per_tile
    assert yan.robust.g_off_ratio == pytest.approx(hw.g_off / (hw.g_on - hw.g_off), rel=1e-12)
    twin = _config("--structure", "tile")  # no --hardware: the twin-column layout of the tile report
    assert twin.prune.tile.pairs == preset("twin-column").neurons_per_tile == 128 // (2 * 3) == 21

"""Configs round-trip through plain dicts and TOML."""
import pytest

from spikec.compress.config import (
    AttentionConfig, CompressConfig, FinetuneConfig, LayerSelection, PruneConfig, QuantConfig, dump_toml, from_dict,
    load_toml, to_dict,
)


def test_toml_round_trip(tmp_path):
    cfg = CompressConfig(prune=PruneConfig(density=0.05, granularity="kernel", layers=LayerSelection(skip_first=True,
                                                                                                     exclude=("a",))),
                         quant=None, attention=AttentionConfig(beta=2.5))
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(cfg))
    assert load_toml(str(path)) == cfg
    assert from_dict(CompressConfig, to_dict(cfg)) == cfg


def test_invalid_values_are_rejected():
    with pytest.raises(ValueError, match="density"):
        PruneConfig(density=0)
    with pytest.raises(ValueError, match="bits"):
        QuantConfig(bits=9)
    assert QuantConfig(mode="ternary").weight_bits == 2


@pytest.mark.parametrize("recalibrate", ["auto", True, False])
def test_recalibration_setting_round_trips(tmp_path, recalibrate):
    cfg = CompressConfig(prune=PruneConfig(recalibrate=recalibrate),
                         finetune=FinetuneConfig(ttfs_simulator="stepped"))
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(cfg))
    assert load_toml(str(path)) == cfg


def test_recalibration_and_simulator_choices_are_checked():
    with pytest.raises(ValueError, match="recalibrate"):
        PruneConfig(recalibrate="sometimes")
    with pytest.raises(ValueError, match="ttfs_simulator"):
        FinetuneConfig(ttfs_simulator="exact")

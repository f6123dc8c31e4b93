"""`spikec convert --finetune-epochs` crops and flips image batches as `spikec train` does; flat inputs stay as they are."""
import numpy as np
import torch
from PIL import Image

from spikec.checkpoint import ann_checkpoint, save_checkpoint
from spikec.cli.main import main
from spikec.conversion import finetune as finetune_mod
from spikec.data import load_dataset
from spikec.data.augment import CropFlip
from spikec.models import build_model


def _recording(monkeypatch):
    seen = []
    real = finetune_mod.finetune

    def recording(*args, **kwargs):
        seen.append(kwargs.get("augment"))
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune_mod, "finetune", recording)
    return seen


def test_image_finetuning_is_augmented(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPIKEC_DATA_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(3)
    for split, n in (("train", 8), ("test", 4)):
        for c in ("a", "b"):
            (tmp_path / "img" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "img" / split / c / f"{i}.png")
    _, _, info = load_dataset(str(tmp_path / "img"))
    torch.manual_seed(0)
    ann = build_model("lenet", info.input_shape, info.num_classes).eval()
    path = save_checkpoint(tmp_path / "ann.pt", ann_checkpoint(ann, dataset=info.to_dict()))
    seen = _recording(monkeypatch)
    assert main(["convert", str(path), "--dataset", str(tmp_path / "img"), "--timesteps", "2", "--calib", "8",
                 "--finetune-epochs", "1", "--threads", "1"]) == 0
    assert len(seen) == 1 and isinstance(seen[0], CropFlip) and seen[0].padding == 2 and seen[0].flip
    assert "CropFlip" in capsys.readouterr().out


def test_flat_or_tiny_inputs_are_not_augmented(tmp_path, monkeypatch):
    digits = load_dataset("digits")
    ann = build_model("mlp", (1, 8, 8), 10, hidden=(16,)).eval()
    path = save_checkpoint(tmp_path / "ann.pt", ann_checkpoint(ann, dataset=digits[2].to_dict()))
    seen = _recording(monkeypatch)
    assert main(["convert", str(path), "--timesteps", "2", "--calib", "32", "--finetune-epochs", "1",
                 "--threads", "1"]) == 0
    assert seen == [None]

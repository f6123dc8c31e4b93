"""The image training recipe: augmentation, SGD/Nesterov, schedules, label smoothing, resume."""
import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import spikec
from spikec.data import load_dataset
from spikec.data.augment import CropFlip, default_augmentation
from spikec.errors import UsageError
from spikec.models import build_model
from spikec.training import count_batches, make_schedule


def test_crop_flip_moves_pixels_as_drawn_and_is_seeded():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5) + 1
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    a, b = CropFlip(2)(x, g1), CropFlip(2)(x, g2)
    assert a.shape == x.shape and torch.equal(a, b)
    # replay the draws: every output is the zero-padded image shifted by (dy, dx) and maybe flipped
    g = torch.Generator().manual_seed(7)
    dy, dx = torch.randint(0, 5, (2,), generator=g), torch.randint(0, 5, (2,), generator=g)
    flip = torch.rand(2, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        want = padded[i, :, dy[i]:dy[i] + 5, dx[i]:dx[i] + 5]
        want = want.flip(-1) if flip[i] else want
        assert torch.equal(a[i], want)
    # channels move together and nothing is invented: every value is a pixel of the image or 0
    assert set(a.unique().tolist()) <= set(x.unique().tolist()) | {0.0}
    c = CropFlip(2)(x, torch.Generator().manual_seed(8))
    assert not torch.equal(a, c)


def test_crop_flip_without_padding_only_flips():
    x = torch.rand(64, 1, 4, 4)
    y = CropFlip(0)(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(y[i], x[i].flip(-1)) for i in range(64)])
    same = torch.tensor([torch.equal(y[i], x[i]) for i in range(64)])
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54


def test_default_augmentation_is_for_images_only():
    assert default_augmentation((3, 32, 32)) == CropFlip(4, True)
    assert default_augmentation((1, 8, 8)) is None and default_augmentation((64,)) is None


def test_onecycle_and_warmup_cosine_shapes():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched, per_batch = make_schedule(opt, "warmup-cosine", 0.1, epochs=4, steps_per_epoch=10, warmup_epochs=1)
    lrs = []
    for _ in range(40):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert per_batch and lrs[0] == pytest.approx(0.1 / 11) and lrs[9] == pytest.approx(0.1 * 10 / 11)
    assert lrs[10] == pytest.approx(0.1)  # warm-up done, cosine starts at the peak
    assert lrs[25] == pytest.approx(0.05 * (1 + math.cos(math.pi * 15 / 30)))
    opt2 = torch.optim.SGD([p], lr=0.1)
    sched2, _ = make_schedule(opt2, "onecycle", 0.1, epochs=2, steps_per_epoch=10)
    seen = []
    for _ in range(20):
        seen.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert max(seen) == pytest.approx(0.1, rel=1e-3) and seen[0] == pytest.approx(0.1 / 25) and seen[-1] < 1e-3


def test_count_batches():
    data = torch.utils.data.TensorDataset(torch.zeros(10, 2), torch.zeros(10))
    assert count_batches(data, 4) == 3 and count_batches(data, 10) == 1


def _run(tr, te, state=None, resume=False, stop_after=None, epochs=3, model_name="mlp", **extra):
    torch.manual_seed(0)
    model = build_model(model_name, (1, 8, 8), 10, **({"hidden": (32,)} if model_name == "mlp" else {}))
    kw = dict(epochs=epochs, lr=0.05, batch_size=64, optimizer="sgd", nesterov=True, schedule="onecycle",
              label_smoothing=0.1, seed=5, progress=False, test_data=te, state_file=state, resume=resume, **extra)
    if stop_after is not None:
        class Interrupt(Exception):
            pass

        def stop(r):
            if r.epoch == stop_after:
                raise Interrupt

        with pytest.raises(Interrupt):
            spikec.train(model, tr, on_epoch=stop, **kw)
        return None, None
    return model, spikec.train(model, tr, **kw)


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    tr, te, _ = load_dataset("digits")
    whole, history = _run(tr, te)
    state = str(tmp_path / "run.state")
    _run(tr, te, state=state, stop_after=1)
    resumed, resumed_history = _run(tr, te, state=state, resume=True)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert [r.test_accuracy for r in history] == [r.test_accuracy for r in resumed_history]
    assert [r.epoch for r in resumed_history] == [1, 2, 3]


def test_a_state_file_of_another_run_is_refused_naming_it(tmp_path):
    tr, te, _ = load_dataset("digits")
    state = str(tmp_path / "run.state")
    _run(tr, te, state=state, stop_after=1)
    with pytest.raises(UsageError, match=r"run\.state: it was written by a different run \(differs in: epochs\)"):
        _run(tr, te, state=state, resume=True, epochs=4)
    (tmp_path / "junk.state").write_bytes(b"garbage")
    with pytest.raises(UsageError, match="junk.state: not a readable spikec training state"):
        _run(tr, te, state=str(tmp_path / "junk.state"), resume=True)


def test_bf16_precision_trains_float32_weights_deterministically_and_resumes(tmp_path):
    """bfloat16 autocast: weights stay float32, the forward pass runs in bf16 (the result differs from
    float32's), two runs agree bitwise, resume equals an uninterrupted run, and a float32 state is refused."""
    tr, te, _ = load_dataset("digits")
    a, hist_a = _run(tr, te, model_name="lenet", precision="bf16", epochs=2)
    b, _ = _run(tr, te, model_name="lenet", precision="bf16", epochs=2)
    fp32, hist_fp32 = _run(tr, te, model_name="lenet", epochs=2)
    assert all(p.dtype == torch.float32 for p in a.parameters())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), fp32.parameters()))
    assert abs(hist_a[-1].test_accuracy - hist_fp32[-1].test_accuracy) < 0.05  # learns as float32 does
    state = str(tmp_path / "bf.state")
    _run(tr, te, model_name="lenet", precision="bf16", epochs=2, state=state, stop_after=1)
    resumed, _ = _run(tr, te, model_name="lenet", precision="bf16", epochs=2, state=state, resume=True)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), resumed.parameters()))
    with pytest.raises(UsageError, match="differs in: precision"):
        _run(tr, te, model_name="lenet", epochs=2, state=state, resume=True)
    with pytest.raises(ValueError, match="precision must be one of"):
        _run(tr, te, precision="fp16")


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "spikec.cli.main", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_resume_and_its_errors(tmp_path):
    out = str(tmp_path / "m.pt")
    base = ["train", "--model", "mlp", "--epochs", "2", "--optimizer", "sgd", "--nesterov", "--schedule",
            "warmup-cosine", "--lr", "0.05", "--out", out, "--json"]
    missing = _cli(*base, "--resume")
    assert missing.returncode == 2 and "--resume: no training state" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    done = _cli(*base)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["epochs"] == 2 and not (tmp_path / "m.pt.state").exists()  # a finished run leaves no state
    bad_aug = _cli(*base, "--augment")
    assert bad_aug.returncode == 2 and "--augment needs images of at least 16x16" in bad_aug.stderr


def test_cli_normalize_records_the_training_statistics(tmp_path):
    out = str(tmp_path / "n.pt")
    done = _cli("train", "--model", "lenet", "--epochs", "1", "--normalize", "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    ckpt = torch.load(out, weights_only=True)
    means, stds = ckpt["arch_config"]["input_norm"]
    x = load_dataset("digits")[0].tensors[0]
    assert means == pytest.approx([float(x.mean())]) and stds == pytest.approx([float(x.std())], rel=1e-4)
    from spikec.checkpoint import load_model

    model, _ = load_model(out)
    assert model.input_norm is not None
    wrong = _cli("train", "--model", "mlp", "--epochs", "1", "--normalize", "--out", out)
    assert wrong.returncode == 2 and "--normalize does not apply to model 'mlp'" in wrong.stderr

"""Training loop: artefacts, exact resume, determinism, trainer == plain loop over train_step,
early stopping, NaN stop, one progress bar, cache."""

from __future__ import annotations

import json
import math

import pytest
import torch

from esad_lib import run_io, training
from esad_lib.config import get_config, seed_everything
from esad_lib.data import LOCODataset, dataset_root
from esad_lib.method import build_model
from esad_lib.method.loss import ESADLoss
from esad_lib.method.train_step import train_step
from esad_lib.perf.speed import prepare_for_training, to_training_layout, training_optimizer
from esad_lib.run_io import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    LOG_FILE,
    MODEL_FILE,
    SUMMARY_FILE,
    cpu_state,
    load_run,
    read_log,
)
from esad_lib.training import cutout_size_for_step, mask_generator, train, train_or_load

#: the smallest run that still exercises everything: 16x16 images, width 4, two cutout sizes,
#: 8 training images in batches of 4 (2 steps per epoch), 2 validation images, feature loss on.
TINY = dict(image_size=(16, 16), base_width=4, cutout_sizes=(2, 4), epochs=2, batch_size=4)


def tiny_cfg(**kw):
    return get_config("smoke", **{**TINY, **kw})


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, session_data_root):
    """One uninterrupted 2-epoch run shared by several tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ESAD_DATA_ROOT", str(session_data_root))
        out = tmp_path_factory.mktemp("full_run")
        snapshots: dict[int, dict] = {}
        res = train(
            tiny_cfg(),
            out,
            progress=False,
            on_epoch_end=lambda e, m: snapshots.__setitem__(e, cpu_state(m)),
        )
    return res, snapshots


def test_run_folder_and_load_run(full_run):
    res, snapshots = full_run
    out = res.run_dir
    for name in (CONFIG_FILE, LOG_FILE, CHECKPOINT_FILE, MODEL_FILE, SUMMARY_FILE):
        assert (out / name).is_file(), name
    assert res.finished and res.epochs_run == 2 and not res.stopped_early
    log = read_log(out)
    assert [r["epoch"] for r in log] == [1, 2]
    for row in log:
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])
        assert "train_recon_l2" in row and "val_recon_feature" in row
    # the best epoch is the one with the lowest validation loss, and model.pt holds its weights
    best = min(log, key=lambda r: r["val_loss"])["epoch"]
    assert res.best_epoch == best and res.best_val_loss == pytest.approx(log[best - 1]["val_loss"])
    model_pt = torch.load(out / MODEL_FILE, weights_only=True)
    assert_same_state(model_pt, snapshots[best])
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["epochs_run"] == 2 and summary["best_epoch"] == best and summary["train_seconds"] > 0
    model, cfg = load_run(out, device="cpu")
    assert cfg == tiny_cfg() and not model.training
    assert_same_state(cpu_state(model), model_pt)
    # the checkpoint loads with weights_only=True and holds the last epoch's weights
    ckpt = torch.load(out / CHECKPOINT_FILE, weights_only=True)
    assert ckpt["epoch"] == 2
    assert_same_state(ckpt["model"], snapshots[2])


def test_interrupted_then_resumed_equals_uninterrupted(full_run, tmp_path):
    ref, _ = full_run
    out = tmp_path / "run"

    def interrupt(epoch, model):
        if epoch == 1:
            raise KeyboardInterrupt  # "killed" right after epoch 1's checkpoint

    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(), out, progress=False, on_epoch_end=interrupt)
    assert torch.load(out / CHECKPOINT_FILE, weights_only=True)["epoch"] == 1
    assert not (out / MODEL_FILE).exists()  # not finished: no model.pt, no summary
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny_cfg(), out, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(tiny_cfg(lr=0.5), out, resume=True, progress=False)

    res = train(tiny_cfg(), out, resume=True, progress=False)
    assert res.epochs_run == 2
    a = torch.load(out / CHECKPOINT_FILE, weights_only=True)
    b = torch.load(ref.run_dir / CHECKPOINT_FILE, weights_only=True)
    assert_same_state(a["model"], b["model"])  # bit-identical weights
    assert_same_state(
        torch.load(out / MODEL_FILE, weights_only=True),
        torch.load(ref.run_dir / MODEL_FILE, weights_only=True),
    )
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa[k][name], sb[k][name])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_log(out)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in read_log(ref.run_dir)]

    # resuming a finished run trains nothing and rewrites nothing
    mtime = (out / MODEL_FILE).stat().st_mtime_ns
    again = train(tiny_cfg(), out, resume=True, progress=False)
    assert again.epochs_run == 2 and (out / MODEL_FILE).stat().st_mtime_ns == mtime


def test_trainer_equals_plain_loop_over_train_step(full_run):
    """``train`` is a loop over ``train_step``: the same seeds and draws give bit-identical weights."""
    _, snapshots = full_run
    cfg = tiny_cfg()
    ds = LOCODataset(dataset_root(cfg), cfg.category, "train", image_size=cfg.image_size)
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])
    seed_everything(cfg.seed)  # the initial weights
    model = prepare_for_training(build_model(cfg), cfg)  # channels_last (the trainer's layout)
    # the core loss, term by term: the trainer's one-pass loss gives the same bits on this CPU
    loss_fn = ESADLoss(cfg)
    optimizer = training_optimizer(model.parameters(), cfg)  # Adam (RIAD's lr and weight decay)
    model.train()
    steps = 0
    for epoch in range(cfg.epochs):
        # the trainer's shuffle on one process: a permutation seeded with seed + epoch
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed + epoch))
        for step, start in enumerate(range(0, len(images), cfg.batch_size)):
            batch = to_training_layout(images[order[start : start + cfg.batch_size]], cfg)
            c = cutout_size_for_step(cfg, epoch, step)
            gen = mask_generator(cfg, epoch, step)
            parts = train_step(model, batch, c, loss_fn, optimizer, generator=gen)
            assert math.isfinite(parts["total"]) and "recon_feature" in parts
            steps += 1
        assert_same_state(cpu_state(model), snapshots[epoch + 1])
    assert steps == 4  # 8 images in batches of 4, 2 epochs


def test_one_progress_bar_per_run(tmp_path, monkeypatch):
    """``progress=True`` opens ONE tqdm bar, with the epochs as its steps (no bar per epoch)."""
    bars = []
    real_tqdm = training.tqdm

    def recording_tqdm(*args, **kwargs):
        bar = real_tqdm(*args, **kwargs)
        bars.append(bar)
        return bar

    monkeypatch.setattr(training, "tqdm", recording_tqdm)
    train(tiny_cfg(epochs=2), tmp_path / "bar", progress=True)
    assert len(bars) == 1
    assert bars[0].total == 2 and bars[0].n == 2 and bars[0].unit == "epoch"


def test_different_seed_gives_different_weights(full_run, tmp_path):
    ref, _ = full_run
    res = train(tiny_cfg(seed=1, epochs=1), tmp_path / "s1", progress=False)
    other = cpu_state(res.model)
    assert any(
        not torch.equal(other[k], v)
        for k, v in torch.load(ref.run_dir / MODEL_FILE, weights_only=True).items()
    )


def test_nan_loss_stops_with_clear_message(tmp_path, monkeypatch):
    from esad_lib.method.loss import ESADLoss

    real_forward = ESADLoss.forward

    def nan_forward(self, img, recon, inpaint=None):
        total, parts = real_forward(self, img, recon, inpaint)
        return total * float("nan"), parts

    monkeypatch.setattr(ESADLoss, "forward", nan_forward)
    with pytest.raises(FloatingPointError, match=r"non-finite training loss .* epoch 1, step 1.*--set lr"):
        train(tiny_cfg(), tmp_path / "nan", progress=False)
    assert not (tmp_path / "nan" / CHECKPOINT_FILE).exists()


def test_early_stopping_keeps_best_weights(tmp_path, monkeypatch):
    val_losses = iter([1.0, 2.0, 0.5, 0.1])  # epoch 2 is worse than epoch 1 -> stop (patience 1)
    monkeypatch.setattr(training, "validation_loss", lambda *a, **k: {"loss": next(val_losses)})
    snapshots: dict[int, dict] = {}
    res = train(
        tiny_cfg(epochs=4, early_stopping_patience=1),
        tmp_path / "es",
        progress=False,
        on_epoch_end=lambda e, m: snapshots.__setitem__(e, cpu_state(m)),
    )
    assert res.stopped_early and res.finished and res.epochs_run == 2 and res.best_epoch == 1
    assert [r["val_loss"] for r in read_log(tmp_path / "es")] == [1.0, 2.0]
    assert_same_state(torch.load(tmp_path / "es" / MODEL_FILE, weights_only=True), snapshots[1])
    assert not any(torch.equal(snapshots[1][k], snapshots[2][k]) for k in snapshots[1] if "weight" in k)


def test_train_or_load_trains_once_then_loads(monkeypatch):
    cfg = tiny_cfg(epochs=1)
    model = train_or_load(cfg, progress=False)
    run_dir = run_io.run_dir_for(cfg)
    assert (run_dir / MODEL_FILE).exists() and run_dir.name == cfg.key()

    def no_training(*a, **k):
        raise AssertionError("train_or_load retrained a cached run")

    monkeypatch.setattr(training, "train", no_training)
    again = train_or_load(cfg, progress=False)
    assert_same_state(cpu_state(again), cpu_state(model))
    assert not again.training


def test_rng_states_survive_weights_only_roundtrip(tmp_path):
    import random

    import numpy as np

    state = run_io.rng_state()
    run_io.save_torch(state, tmp_path / "rng.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    run_io.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_cutout_size_per_step_is_seeded_and_covers_sizes():
    cfg = tiny_cfg(cutout_sizes=(2, 4, 8, 16))
    draws = [training.cutout_size_for_step(cfg, e, s) for e in range(3) for s in range(20)]
    assert draws == [training.cutout_size_for_step(cfg, e, s) for e in range(3) for s in range(20)]
    assert set(draws) == {2, 4, 8, 16}
    other = [training.cutout_size_for_step(cfg.replace(seed=1), e, s) for e in range(3) for s in range(20)]
    assert other != draws


def test_lr_schedule_values_by_hand():
    c = tiny_cfg(lr=1e-3, epochs=2)
    assert [training.lr_at(c, e, s, 2) for e in range(2) for s in range(2)] == [1e-3] * 4
    cos = c.replace(lr_schedule="cosine")  # T = 2 epochs x 2 steps = 4
    want = [1e-3, 1e-3 * (1 + math.cos(math.pi / 4)) / 2, 0.5e-3, 1e-3 * (1 + math.cos(3 * math.pi / 4)) / 2]
    got = [training.lr_at(cos, e, s, 2) for e in range(2) for s in range(2)]
    assert got == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="lr_schedule"):
        training.lr_at(c.replace(lr_schedule="step"), 0, 0, 2)


def test_cosine_schedule_is_used_and_resumes_exactly(full_run, tmp_path):
    cfg = tiny_cfg(lr_schedule="cosine")
    ref = train(cfg, tmp_path / "ref", progress=False)
    steps = 2  # 8 images, batch 4
    # the log shows the rate of each epoch's last step
    assert [r["lr"] for r in ref.history] == pytest.approx(
        [training.lr_at(cfg, e, steps - 1, steps) for e in range(cfg.epochs)]
    )
    constant = cpu_state(full_run[0].model)
    assert any(not torch.equal(v, constant[k]) for k, v in cpu_state(ref.model).items())

    def interrupt(epoch, model):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", progress=False, on_epoch_end=interrupt)
    res = train(cfg, tmp_path / "run", resume=True, progress=False)
    assert_same_state(cpu_state(res.model), cpu_state(ref.model))
    with pytest.raises(ValueError, match="lr_schedule"):
        train(tiny_cfg(lr_schedule="linear"), tmp_path / "bad", progress=False)


def test_batched_validation_equals_one_pass_per_training_batch_and_cutout_size() -> None:
    """``validation_loss`` batches (cutout size, image) pairs ``eval_batch_size`` at a time,
    each image with its own masks; it equals the plain loop it replaced -- one pass per
    training-sized batch and cutout size with the masks of ``derive_seed(seed, "val", c, b)``."""
    cfg = tiny_cfg(eval_batch_size=3)
    torch.manual_seed(0)
    model = prepare_for_training(build_model(cfg), cfg)
    loss = ESADLoss(cfg)
    images = [torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(i)) * 2 - 1 for i in range(5)]
    sums: dict[str, float] = {}
    count = 0
    model.eval()
    with torch.no_grad():
        for c in cfg.cutout_sizes:
            for b, start in enumerate(range(0, len(images), cfg.batch_size)):
                img = to_training_layout(torch.stack(images[start : start + cfg.batch_size]), cfg)
                gen = training.seeded_generator(cfg.seed, "val", int(c), b)
                out = model(img, int(c), fill="train", generator=gen)
                total, parts = loss(img, out.recon, out.inpaint)
                parts = {"loss": float(total), **{k: v for k, v in parts.items() if k != "total"}}
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v * img.shape[0]
                count += img.shape[0]
    want = {k: v / count for k, v in sums.items()}
    model.train()
    got = training.validation_loss(model, loss, images, cfg, torch.device("cpu"))
    assert model.training  # restored
    assert got.keys() == want.keys()
    assert all(got[k] == pytest.approx(want[k], rel=1e-6) for k in want)

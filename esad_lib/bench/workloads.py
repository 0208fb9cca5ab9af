"""The measured workloads, shared by the timing in the benchmark's process and the memory probes
in subprocesses: random inputs, full test-time scoring, one training step, and ``build(spec)``
that makes any of them from a JSON-able description.

Input images are random (uniform noise in [-1, 1], seeded): the cost of dense convolutions does
not depend on the pixel values, and no dataset is needed.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import torch

from esad_lib.bench.metric_inputs import metric_call, synthetic_metric_inputs
from esad_lib.config import ESADConfig, seed_everything
from esad_lib.features import build_feature_extractor
from esad_lib.method import build_model as _library_build_model
from esad_lib.method import model_fills
from esad_lib.method.loss import ESADLoss
from esad_lib.scoring import anomaly_maps, build_scoring_extractor, prepare_scoring


def random_images(batch: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """Seeded uniform noise ``[batch, 3, H, W]`` in [-1, 1] (the U-Nets' input range)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, int(size[0]), int(size[1]), generator=g) * 2.0 - 1.0


def build_model(cfg: ESADConfig, device: torch.device) -> torch.nn.Module:
    """``esad_lib.method.build_model(cfg)`` with its weights seeded by ``cfg.seed``, on ``device``."""
    seed_everything(cfg.seed)
    return _library_build_model(cfg).to(device)


def scoring_extractor(model: torch.nn.Module, cfg: ESADConfig) -> torch.nn.Module | None:
    """The feature extractor of feature-level maps (None for pixel-level maps)."""
    if cfg.score_map != "feature":
        return None
    return build_scoring_extractor(model, cfg)


def make_scoring(
    cfg: ESADConfig,
    batch: int,
    device: torch.device,
    model: torch.nn.Module | None = None,
) -> Callable[[], torch.Tensor]:
    """Full test-time scoring of ``batch`` images: every cutout size x every mask, map included.

    Goes through ``esad_lib.scoring.anomaly_maps`` (so ``cfg.fast_scoring`` picks the path).
    A given ``model`` is deep-copied, so that a path that changes the model cannot affect another.
    With the fast path the model and extractor are prepared (BatchNorm folded, channels_last)
    once, before timing -- as ``esad_lib.scoring.score_dataset`` does once per split.
    """
    model = copy.deepcopy(model) if model is not None else build_model(cfg, device)
    model.eval()
    extractor = scoring_extractor(model, cfg)
    if cfg.fast_scoring:
        model, extractor = prepare_scoring(model, extractor)
    images = random_images(batch, cfg.image_size, cfg.seed + 1).to(device)
    return lambda: anomaly_maps(model, images, cfg, extractor=extractor)


def make_train_step(
    cfg: ESADConfig, device: torch.device, model: torch.nn.Module | None = None
) -> Callable[[], float]:
    """One optimiser step as ``esad_lib.training`` takes it: forward over the K masks with the
    model's train fill, ``ESADLoss`` (its feature term on ``cfg.loss_feature_extractor``),
    backward, Adam (float16 autocast + GradScaler on CUDA when ``cfg.amp``).

    Batch = ``cfg.batch_size``; the cutout size is the middle one of ``cfg.cutout_sizes``
    (the cost of a step does not depend on it: masks only multiply).
    """
    model = copy.deepcopy(model) if model is not None else build_model(cfg, device)
    model.train()
    extractor = None
    if cfg.w_feature > 0:
        name = cfg.loss_feature_extractor
        extractor = build_feature_extractor(
            name,
            weights=cfg.feature_weights,
            device=device,
            model=model if name == "recon_encoder" else None,
        )
    loss_fn = ESADLoss(cfg, extractor=extractor).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    use_amp = bool(cfg.amp) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    images = random_images(cfg.batch_size, cfg.image_size, cfg.seed + 2).to(device)
    sizes = sorted(cfg.cutout_sizes)
    cutout = int(sizes[len(sizes) // 2])
    gen = torch.Generator().manual_seed(cfg.seed)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        amp = torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext()
        with amp:
            out = model(images, cutout, fill=model_fills(cfg)[0], generator=gen)
            total, _ = loss_fn(images, out.recon, out.inpaint)
        scaler.scale(total).backward()
        scaler.step(opt)
        scaler.update()
        return float(total.detach())

    return step


def build(spec: dict[str, Any], device: torch.device) -> Callable[[], object]:
    """A zero-argument callable for the workload described by the JSON-able ``spec``.

    ``spec["kind"]``: ``"score"`` (``cfg``, ``batch``), ``"train_step"`` (``cfg``; its
    ``batch_size`` is the batch) or ``"metric"`` (``metric``, ``n``, ``size``, ``seed``).
    """
    kind = spec["kind"]
    if kind in ("score", "train_step"):
        cfg = ESADConfig.from_dict(spec["cfg"]).replace(device=str(device))
        if kind == "score":
            return make_scoring(cfg, int(spec["batch"]), device)
        return make_train_step(cfg, device)
    if kind == "metric":
        maps, channels, defects = synthetic_metric_inputs(
            int(spec["n"]), tuple(spec["size"]), seed=int(spec.get("seed", 0))
        )
        return metric_call(spec["metric"], maps, channels, defects)
    raise ValueError(f"unknown workload kind {kind!r}")

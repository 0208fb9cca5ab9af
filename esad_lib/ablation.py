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
    DIR/results.csv                  tidy: variant, category, seed, metric, value, profile, config_key
    DIR/summary.md                   mean +- std over seeds per variant and metric

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

from tqdm.auto import tqdm

from esad_lib.config import PRESETS, RIAD_DIFF, RUNTIME_FIELDS, TEST_TIME_FIELDS, ESADConfig
from esad_lib.paths import atomic_write_text

#: columns of ``results.csv`` (tidy long format: one row per run and metric).
RESULT_COLUMNS: tuple[str, ...] = ("variant", "category", "seed", "metric", "value", "profile", "config_key")

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
    try:
        from esad_lib.features import available_extractors
    except ImportError:  # the features module is optional for the registry itself
        return []
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
    from esad_lib import training

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
    from esad_lib.evaluation import evaluate_model as _evaluate

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
    from esad_lib.config import resolve_device
    from esad_lib.evaluation import scores_csv
    from esad_lib.training import load_run

    model, _ = load_run(model_dir)
    model = model.to(resolve_device(cfg.device))
    metrics, result = evaluate_variant(model, cfg)
    atomic_write_text(Path(run_dir) / "scores.csv", scores_csv(result))
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
        for s in group:
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
    atomic_write_text(report.summary_md, summary_markdown(df))
    report.seconds = time.perf_counter() - t0
    return report


# ---------------------------------------------------------------------------------------
# results
def collect_results(out: str | Path, specs: Iterable[RunSpec] | None = None):
    """Tidy results of finished runs under ``out`` (all of them, or those of ``specs``).

    Returns a pandas DataFrame with :data:`RESULT_COLUMNS`.
    """
    import pandas as pd

    out = Path(out)
    if specs is None:
        run_dirs = sorted(p.parent for p in (out / "runs").glob("*/*/seed*/metrics.json"))
    else:
        run_dirs = [s.run_dir(out) for s in specs if run_finished(s, out)]
    rows = []
    for d in run_dirs:
        meta_path, metrics_path = d / "run.json", d / "metrics.json"
        try:
            meta = json.loads(meta_path.read_text())
            metrics = json.loads(metrics_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise RuntimeError(
                f"cannot read the finished run in {d} ({e}); move the folder away and re-run"
            ) from e
        for name, value in flatten_metrics(metrics).items():
            rows.append(
                {
                    "variant": meta["variant"],
                    "category": meta["category"],
                    "seed": int(meta["seed"]),
                    "metric": name,
                    "value": value,
                    "profile": meta["profile"],
                    "config_key": meta["config_key"],
                }
            )
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def read_results(path: str | Path):
    """Load a ``results.csv`` written by :func:`run_grid`, checking its columns."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist; run `esad ablate ... --out DIR` first (it writes DIR/results.csv)"
        )
    df = pd.read_csv(path)
    missing = [c for c in RESULT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path} is not an ablation results table: columns {missing} missing (expected {RESULT_COLUMNS})"
        )
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


def _fmt(mean: float, std: float, metric: str) -> str:
    if metric == "n_params" or metric.endswith(".n_params"):
        return f"{mean:,.0f}"
    s = f"{mean:.3f}"
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        s += f" ± {std:.3f}"
    return s


def summary_markdown(df, base: str = BASE_VARIANT) -> str:
    """Markdown summary: variants x metrics (mean ± std over seeds of the category mean),
    then, for the :data:`HEADLINE_METRICS`, per-category means and the paper-claim comparison."""
    if df.empty:
        return "# Ablation summary\n\nNo finished runs yet.\n"
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
        "Each cell: mean ± std over seeds of the metric averaged over categories (no ± with a single seed).",
        "",
        "| variant | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    idx = {(r.variant, r.metric): r for r in t.itertuples()}
    for v in variants:
        cells = []
        for m in metrics:
            r = idx.get((v, m))
            cells.append("" if r is None else _fmt(r.mean, r.std, m))
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    headline = [m for m in HEADLINE_METRICS if m in metrics] or metrics[:1]
    if len(cats) > 1:
        per_cat = df.groupby(["variant", "category", "metric"], sort=False)["value"].mean()
        for m in headline:
            lines += ["", f"## {m} per category (mean over seeds)", ""]
            lines += ["| variant | " + " | ".join(cats) + " |", "|---|" + "---|" * len(cats)]
            for v in variants:
                cells = [f"{per_cat[(v, c, m)]:.3f}" if (v, c, m) in per_cat.index else "" for c in cats]
                lines.append(f"| {v} | " + " | ".join(cells) + " |")
    if base in variants:
        for m in headline:
            cmp = compare_to_base(df, metric=m, base=base)
            if cmp.empty:
                continue
            lines += ["", f"## Paper claim vs measurement: {m} (difference to {base})", ""]
            lines += ["| variant | paper claims | expected | measured Δ | agrees |", "|---|---|---|---|---|"]
            for r in cmp.itertuples():
                lines.append(f"| {r.variant} | {r.claim} | {r.expected} | {r.measured} | {r.agrees} |")
    return "\n".join(lines) + "\n"


def compare_to_base(df, metric: str, base: str = BASE_VARIANT, tolerance: float = 0.01):
    """For each variant (not ``base``): the paper's claim, the direction it implies, and the
    measured difference to ``base`` on ``metric`` (per seed, on category means; mean ± std).

    ``agrees`` is "yes"/"no" when the claim implies a direction ("lower": Δ < -tolerance;
    "similar": |Δ| <= tolerance ... plus "no" beyond it), "n/a" otherwise.  Pairing is by seed
    over the categories both variants ran on.
    """
    import pandas as pd

    reg = variant_registry()
    sub = df[df["metric"] == metric]
    if base not in set(sub["variant"]):
        return pd.DataFrame(
            columns=["variant", "claim", "expected", "delta_mean", "delta_std", "measured", "agrees"]
        )
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
        var = reg.get(v)
        expected = var.expect if var else None
        if expected == "lower":
            agrees = "yes" if mean < -tolerance else "no"
        elif expected == "similar":
            agrees = "yes" if abs(mean) <= tolerance else "no"
        else:
            agrees = "n/a"
        rows.append(
            {
                "variant": v,
                "claim": var.claim if var else "",
                "expected": {"lower": f"lower than {base}", "similar": f"close to {base}"}.get(
                    expected, "no claim"
                ),
                "delta_mean": mean,
                "delta_std": std,
                "measured": f"{mean:+.3f}" + ("" if math.isnan(std) else f" ± {std:.3f}") + f" (n={len(s)})",
                "agrees": agrees,
            }
        )
    return pd.DataFrame(
        rows, columns=["variant", "claim", "expected", "delta_mean", "delta_std", "measured", "agrees"]
    )


def parse_list(text: str, cast: Callable[[str], Any] = str) -> list[Any]:
    """``"a,b, c"`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    return [cast(x.strip()) for x in text.split(",") if x.strip()]


__all__ = [
    "BASE_VARIANT",
    "GridReport",
    "RESULT_COLUMNS",
    "RunSpec",
    "TEST_TIME_FIELDS",
    "Variant",
    "apply_variant",
    "assign_devices",
    "collect_results",
    "compare_to_base",
    "config_key",
    "evaluate_model",
    "evaluate_variant",
    "expand_grid",
    "flatten_metrics",
    "get_variant",
    "read_results",
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

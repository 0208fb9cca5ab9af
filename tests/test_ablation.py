"""The ablation registry and grid runner (esad_lib.ablation, `esad ablate`).

Training and evaluation are replaced by recording fakes (monkeypatched
``ablation.steps.train_model`` / ``ablation.steps.evaluate_model``) for the runner logic; one small
real grid at the end runs the library's training and evaluation end to end.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from esad_lib import ablation, metrics, uncertainty
from esad_lib.ablation.results import CI_N_BOOT, CI_SEED, KEY_COLUMNS, RESULT_COLUMNS, collect_results
from esad_lib.ablation.summary import COMPARE_COLUMNS, INTERVAL_COLUMNS, seed_values, summary_markdown
from esad_lib.ablation.variants import get_variant, training_config
from esad_lib.ablation.verdict import count_verdicts
from esad_lib.cli.ablate import base_config, register
from esad_lib.config import PRESETS, get_config
from esad_lib.evaluation import SCORES_FILE


# ------------------------------------------------------------------------------------------
# fakes: a "model" is a file; metrics are a deterministic function of the config
def _fake_metrics(cfg) -> dict:
    # a value that depends on test-time fields, training fields and the seed
    v = 0.5 + 0.1 * cfg.fill_alpha + 0.01 * cfg.seed + 0.001 * cfg.num_masks
    if cfg.score_map == "pixel":
        v -= 0.05
    return {
        "image_auroc": {"structural": v, "logical": v - 0.2, "mean": v - 0.1},
        "au_pro": v / 2,
        "au_spro": {"structural": v / 3, "logical": None, "mean": v / 3},
        "counts": {"good": 4},  # not a metric: must not reach results.csv
        "timing": {"scoring_ms_per_image": 1.0},
        "schema": 1,
    }


class Recorder:
    def __init__(self) -> None:
        self.train_calls: list[tuple[str, bool, dict]] = []
        self.eval_calls: list[tuple[str, str]] = []
        self.fail_on: set[str] = set()

    def train(self, cfg, model_dir: Path, resume: bool) -> None:
        self.train_calls.append((Path(model_dir).name, resume, cfg.to_dict()))
        (Path(model_dir) / "model.pt").write_text(json.dumps(cfg.to_dict(), default=list))
        (Path(model_dir) / "train_summary.json").write_text("{}")

    def evaluate(self, cfg, model_dir: Path, run_dir: Path) -> dict:
        if Path(run_dir).parent.parent.name in self.fail_on:
            raise RuntimeError("simulated crash")
        assert (Path(model_dir) / "model.pt").exists(), "evaluated before the model was trained"
        self.eval_calls.append((Path(model_dir).name, str(run_dir)))
        return _fake_metrics(cfg)


@pytest.fixture
def rec(monkeypatch) -> Recorder:
    r = Recorder()
    monkeypatch.setattr(ablation.steps, "train_model", r.train)
    monkeypatch.setattr(ablation.steps, "evaluate_model", r.evaluate)
    return r


BASE = PRESETS["smoke"]


# ------------------------------------------------------------------------------------------
# registry and config diffs
def test_registry_has_the_required_variants() -> None:
    names = set(ablation.variant_names())
    required = {
        "esad",
        "riad",
        "no_feature_loss",
        "pixel_map",
        "feature_map",
        "train_fill_at_test",
        "alpha_0",
        "alpha_0.25",
        "alpha_0.75",
        "alpha_1",
        "std_conv",
        "cutouts_2_4",
        "cutouts_8_16",
        "cutouts_4_8_16",
        "k2",
        "k4",
    }
    assert required <= names, required - names


def test_extractor_variants_follow_available_extractors() -> None:
    features = pytest.importorskip("esad_lib.features")
    names = set(ablation.variant_names())
    avail = features.available_extractors()
    assert avail["random_cnn"]["available"]
    for ex, info in avail.items():
        assert (f"extractor_{ex}" in names) == bool(info["available"]), ex
        if not info["available"]:
            continue
        diff = get_variant(f"extractor_{ex}").diff
        assert diff["feature_extractor"] == ex
        # recon_encoder cannot drive the feature loss (no trained net exists while training)
        assert diff.get("loss_feature_extractor", ex) == ex and ("loss_feature_extractor" in diff) == (
            ex != "recon_encoder"
        )


def test_every_variant_diff_is_valid_and_applied() -> None:
    for name, v in ablation.variant_registry().items():
        cfg = ablation.apply_variant(BASE, name)
        for k, val in v.diff.items():
            assert getattr(cfg, k) == val, (name, k)
        # every other field is untouched
        untouched = {k: x for k, x in cfg.to_dict().items() if k not in v.diff}
        assert untouched == {k: x for k, x in BASE.to_dict().items() if k not in v.diff}


def test_riad_diff() -> None:
    cfg = ablation.apply_variant(BASE, "riad")
    assert (cfg.method, cfg.unet, cfg.test_fill, cfg.score_map, cfg.w_feature) == (
        "riad",
        "classic",
        "zero",
        "pixel",
        0.0,
    )
    assert ablation.apply_variant(BASE, "alpha_0.25").fill_alpha == 0.25
    assert ablation.apply_variant(BASE, "cutouts_8_16").cutout_sizes == (8, 16)
    assert ablation.apply_variant(BASE, "k4").num_masks == 4
    assert ablation.apply_variant(BASE, "std_conv").unet == "lightweight_std"


def test_train_key_ignores_test_time_fields_only() -> None:
    k = ablation.train_key(BASE)
    shared = ("alpha_0", "alpha_1", "pixel_map", "train_fill_at_test", "zero_fill_at_test", "feature_map")
    for name in (*shared, "extractor_recon_encoder"):
        assert ablation.train_key(ablation.apply_variant(BASE, name)) == k, name
    for name in ("riad", "no_feature_loss", "std_conv", "cutouts_2_4", "k2"):
        assert ablation.train_key(ablation.apply_variant(BASE, name)) != k, name
    assert ablation.train_key(BASE.replace(seed=1)) != k
    assert ablation.train_key(BASE.replace(category="pushpins")) != k
    # full config key: test-time variants differ from the base
    assert ablation.config_key(ablation.apply_variant(BASE, "alpha_0")) != ablation.config_key(BASE)
    assert ablation.config_key(BASE.replace(device="cuda:1")) == ablation.config_key(BASE)
    # the model is trained with the preset's test-time fields whatever the variant
    assert training_config(ablation.apply_variant(BASE, "alpha_0")) == BASE


# ------------------------------------------------------------------------------------------
# grid expansion
def test_expand_grid_is_the_product_in_order() -> None:
    specs = ablation.expand_grid(BASE, ["esad", "alpha_0"], ["breakfast_box", "pushpins"], [0, 1, 2])
    assert len(specs) == 2 * 2 * 3
    assert [(s.variant, s.category, s.seed) for s in specs][:4] == [
        ("esad", "breakfast_box", 0),
        ("esad", "breakfast_box", 1),
        ("esad", "breakfast_box", 2),
        ("esad", "pushpins", 0),
    ]
    for s in specs:
        assert s.cfg.category == s.category and s.cfg.seed == s.seed
        assert s.cfg.fill_alpha == (0.0 if s.variant == "alpha_0" else BASE.fill_alpha)
    assert len({s.config_key for s in specs}) == 12


def test_expand_grid_errors() -> None:
    with pytest.raises(KeyError, match="nope.*known variants: esad"):
        ablation.expand_grid(BASE, ["esad", "nope"], ["pushpins"], [0])
    with pytest.raises(ValueError, match="at least one of seeds"):
        ablation.expand_grid(BASE, ["esad"], ["pushpins"], [])
    with pytest.raises(ValueError, match="duplicate variants"):
        ablation.expand_grid(BASE, ["esad", "esad"], ["pushpins"], [0])


# ------------------------------------------------------------------------------------------
# runner: sharing, skip, resume
def test_test_time_variants_share_one_model(rec: Recorder, tmp_path: Path) -> None:
    variants = ["esad", "alpha_0", "pixel_map", "feature_map", "k2"]
    rep = ablation.run_grid(BASE, variants, ["pushpins"], [0, 1], tmp_path, progress=False)
    # one model per (training config, seed): esad-like and k2, two seeds each
    assert len(rec.train_calls) == 4
    assert all(resume is False for _, resume, _ in rec.train_calls)
    # feature_map == esad: evaluated once, metrics copied to both run folders
    assert len(rec.eval_calls) == 4 * 2
    assert len(rep.evaluated) == 5 * 2
    for v in variants:
        for seed in (0, 1):
            d = tmp_path / "runs" / v / "pushpins" / f"seed{seed}"
            meta = json.loads((d / "run.json").read_text())
            assert (meta["variant"], meta["seed"], meta["category"]) == (v, seed, "pushpins")
            assert (tmp_path / "models" / meta["train_key"] / "model.pt").exists()
    m_esad = json.loads((tmp_path / "runs/esad/pushpins/seed0/metrics.json").read_text())
    m_feat = json.loads((tmp_path / "runs/feature_map/pushpins/seed0/metrics.json").read_text())
    assert m_esad == m_feat
    # trained config has the preset's test-time fields even when the first user was alpha_0
    for _, _, d in rec.train_calls:
        assert d["fill_alpha"] == BASE.fill_alpha and d["score_map"] == BASE.score_map


def test_rerun_skips_finished_runs(rec: Recorder, tmp_path: Path) -> None:
    ablation.run_grid(BASE, ["esad", "alpha_1"], ["pushpins"], [0], tmp_path, progress=False)
    n_train, n_eval = len(rec.train_calls), len(rec.eval_calls)
    csv1 = (tmp_path / "results.csv").read_text()
    rep = ablation.run_grid(BASE, ["esad", "alpha_1"], ["pushpins"], [0], tmp_path, progress=False)
    assert (len(rec.train_calls), len(rec.eval_calls)) == (n_train, n_eval)
    assert len(rep.skipped) == 2 and rep.evaluated == []
    assert (tmp_path / "results.csv").read_text() == csv1
    # growing the grid only runs the new cells (the esad model is reused)
    ablation.run_grid(BASE, ["esad", "alpha_1", "alpha_0"], ["pushpins"], [0], tmp_path, progress=False)
    assert len(rec.train_calls) == n_train and len(rec.eval_calls) == n_eval + 1


def test_crash_then_rerun_finishes_only_the_rest(rec: Recorder, tmp_path: Path) -> None:
    rec.fail_on = {"k2"}
    with pytest.raises(RuntimeError, match="simulated crash"):
        ablation.run_grid(BASE, ["esad", "k2"], ["pushpins"], [0], tmp_path, progress=False)
    assert (tmp_path / "runs/esad/pushpins/seed0/metrics.json").exists()
    assert not (tmp_path / "runs/k2/pushpins/seed0/metrics.json").exists()
    rec.fail_on = set()
    n_train = len(rec.train_calls)
    rep = ablation.run_grid(BASE, ["esad", "k2"], ["pushpins"], [0], tmp_path, progress=False)
    assert len(rec.train_calls) == n_train  # both models were already trained
    assert rep.skipped == [str(tmp_path / "runs/esad/pushpins/seed0")]
    assert rep.evaluated == [str(tmp_path / "runs/k2/pushpins/seed0")]


def test_unfinished_training_is_resumed(rec: Recorder, tmp_path: Path) -> None:
    spec = ablation.expand_grid(BASE, ["no_feature_loss"], ["pushpins"], [0])[0]
    mdir = spec.model_dir(tmp_path / "models")
    mdir.mkdir(parents=True)
    (mdir / "checkpoint.pt").write_text("partial")  # training interrupted: checkpoint, no model.pt
    rep = ablation.run_grid(BASE, ["esad", "no_feature_loss"], ["pushpins"], [0], tmp_path, progress=False)
    resumes = {key: resume for key, resume, _ in rec.train_calls}
    assert resumes == {spec.train_key: True, ablation.train_key(BASE.replace(category="pushpins")): False}
    assert rep.resumed == [spec.train_key]


def test_models_can_live_in_the_train_or_load_cache(rec: Recorder, tmp_path: Path) -> None:
    run_io = pytest.importorskip("esad_lib.run_io")
    cfg = BASE.replace(category="pushpins")
    models = tmp_path / "cache" / "runs"
    ablation.run_grid(BASE, ["esad", "alpha_0"], ["pushpins"], [0], tmp_path / "grid", models_dir=models)
    # the esad model sits exactly where train_or_load(cfg) looks for it
    assert run_io.run_dir_for(cfg).name == ablation.train_key(cfg)
    assert [p.name for p in models.iterdir() if p.is_dir()] == [ablation.train_key(cfg)]
    assert not (tmp_path / "grid" / "models").exists()


def test_riad_reuses_the_model_train_or_load_cached_under_its_full_key(rec: Recorder, tmp_path: Path) -> None:
    """``esad demo`` trains RIAD with ``train_or_load(riad_config(cfg))``, i.e. under the full
    config key; RIAD's diff sets test-time fields, so its train key differs.  The grid must use
    that cached model instead of training a second, identical one."""
    from esad_lib.config import riad_config

    demo = get_config("demo").replace(category="juice_bottle")
    spec = ablation.expand_grid(demo, ["riad"], ["juice_bottle"], [0])[0]
    assert spec.config_key == riad_config(demo).key() != spec.train_key  # the mismatch being fixed
    esad_spec = ablation.expand_grid(demo, ["esad"], ["juice_bottle"], [0])[0]
    assert esad_spec.train_key == esad_spec.config_key == demo.key()  # ESAD's keys agree anyway
    models = tmp_path / "cache" / "runs"
    assert spec.model_dir(models) == models / spec.train_key  # nothing cached: train under train_key
    cached = models / spec.config_key
    cached.mkdir(parents=True)
    (cached / "model.pt").write_text("riad trained by train_or_load")
    assert spec.model_dir(models) == models / spec.train_key  # unfinished (no train_summary.json)
    (cached / "train_summary.json").write_text("{}")
    assert spec.model_dir(models) == cached
    ablation.run_grid(demo, ["riad", "alpha_1"], ["juice_bottle"], [0], tmp_path / "grid", models_dir=models)
    assert [k for k, _, _ in rec.train_calls] == [esad_spec.train_key]  # only alpha_1's ESAD model
    assert (spec.config_key, str(spec.run_dir(tmp_path / "grid"))) in rec.eval_calls
    # a model trained under the train key wins over the cached one (both are the same training)
    own = models / spec.train_key
    own.mkdir()
    (own / "model.pt").write_text("x")
    (own / "train_summary.json").write_text("{}")
    assert spec.model_dir(models) == own


def test_run_folder_of_another_config_is_not_overwritten(rec: Recorder, tmp_path: Path) -> None:
    ablation.run_grid(BASE, ["esad"], ["pushpins"], [0], tmp_path, progress=False)
    before = (tmp_path / "runs/esad/pushpins/seed0/metrics.json").read_text()
    with pytest.raises(RuntimeError, match="another configuration.*new --out"):
        ablation.run_grid(BASE.replace(epochs=3), ["esad"], ["pushpins"], [0], tmp_path, progress=False)
    assert (tmp_path / "runs/esad/pushpins/seed0/metrics.json").read_text() == before


def test_parallel_workers_give_the_same_results(rec: Recorder, tmp_path: Path) -> None:
    args = (BASE, ["esad", "alpha_0", "k2"], ["pushpins", "breakfast_box"], [0])
    ablation.run_grid(*args, tmp_path / "seq", progress=False)
    ablation.run_grid(*args, tmp_path / "par", devices=["cpu", "cpu"], progress=False)
    seq = pd.read_csv(tmp_path / "seq/results.csv")
    par = pd.read_csv(tmp_path / "par/results.csv")
    pd.testing.assert_frame_equal(seq, par)
    # every model of the parallel grid was trained exactly once (by a worker)
    assert len(list((tmp_path / "par/models").glob("*/model.pt"))) == 4


# ------------------------------------------------------------------------------------------
# results table and summary
def test_results_table_schema_and_values(rec: Recorder, tmp_path: Path) -> None:
    variants, cats, seeds = ["esad", "alpha_0", "pixel_map"], ["pushpins", "juice_bottle"], [0, 1]
    ablation.run_grid(BASE, variants, cats, seeds, tmp_path, progress=False)
    df = ablation.read_results(tmp_path / "results.csv")
    assert list(df.columns) == list(RESULT_COLUMNS)
    expected_metrics = {
        "image_auroc.structural",
        "image_auroc.logical",
        "image_auroc.mean",
        "au_pro",
        "au_spro.structural",
        "au_spro.mean",
    }  # au_spro.logical is None -> dropped; counts/timing/schema are not metrics
    assert set(df["metric"]) == expected_metrics
    assert len(df) == len(variants) * len(cats) * len(seeds) * len(expected_metrics)
    assert not df.duplicated(["variant", "category", "seed", "metric"]).any()
    assert set(df["profile"]) == {"smoke"}
    row = df[(df.variant == "alpha_0") & (df.category == "pushpins") & (df.seed == 1)]
    cfg = ablation.apply_variant(BASE, "alpha_0").replace(category="pushpins", seed=1)
    v = row.set_index("metric")["value"]
    assert v["image_auroc.structural"] == pytest.approx(_fake_metrics(cfg)["image_auroc"]["structural"])
    assert set(row["config_key"]) == {ablation.config_key(cfg)}
    # collect_results over the whole folder == the table run_grid wrote
    pd.testing.assert_frame_equal(
        collect_results(tmp_path).sort_values(list(df.columns[:4])).reset_index(drop=True),
        df.sort_values(list(df.columns[:4])).reset_index(drop=True),
    )


def test_summary_mean_and_std_over_seeds(rec: Recorder, tmp_path: Path) -> None:
    ablation.run_grid(BASE, ["esad", "alpha_0", "pixel_map"], ["pushpins", "juice_bottle"], [0, 1], tmp_path)
    df = ablation.read_results(tmp_path / "results.csv")
    t = ablation.summary_table(df).set_index(["variant", "metric"])
    # hand-computed: per seed the category mean, then mean/std over the two seeds
    vals = [
        _fake_metrics(ablation.apply_variant(BASE, "alpha_0").replace(category=c, seed=s))["au_pro"]
        for s in (0, 1)
        for c in ("pushpins", "juice_bottle")
    ]
    per_seed = [(vals[0] + vals[1]) / 2, (vals[2] + vals[3]) / 2]
    mean = sum(per_seed) / 2
    std = math.sqrt(sum((x - mean) ** 2 for x in per_seed) / 1)
    assert t.loc[("alpha_0", "au_pro"), "mean"] == pytest.approx(mean)
    assert t.loc[("alpha_0", "au_pro"), "std"] == pytest.approx(std)
    assert t.loc[("alpha_0", "au_pro"), "n_seeds"] == 2
    md = (tmp_path / "summary.md").read_text()
    assert "| variant | image_auroc.structural |" in md
    # no per-image scores (the fake evaluation writes none): mean ± std over seeds, in %
    assert "| alpha_0 |" in md and f"{100 * mean:.1f} ± {100 * std:.1f}" in md
    assert "Paper claim vs measurement: image_auroc.structural" in md and "pixel_map" in md
    assert "t-interval over 2 seeds" in md
    # the paper claims nothing about AU-sPRO: its differences are an exploration, never a verdict
    assert "Paper claim vs measurement: au_spro" not in md
    assert "## Exploration: au_spro.structural" in md
    assert "au_spro.structural, smoke profile" not in md and md.count("checkable claim") == 1


def test_compare_to_base_directions() -> None:
    rows = []
    for seed, (b, r, s) in enumerate([(0.9, 0.7, 0.905), (0.8, 0.6, 0.79)]):
        for v, x in (("esad", b), ("riad", r), ("std_conv", s), ("pixel_map", b + 0.1), ("alpha_0", b)):
            rows.append(
                dict(variant=v, category="c", seed=seed, metric="m", value=x, profile="p", config_key="k")
            )
    for seed, x in enumerate((0.901, 0.802)):  # "similar" claim, a tight difference (+0.001, +0.002)
        rows.append(dict(variant="feature_map", category="c", seed=seed, metric="m", value=x, profile="p"))
        rows[-1]["config_key"] = "k"
    cmp = ablation.compare_to_base(pd.DataFrame(rows), "m").set_index("variant")
    assert list(cmp.reset_index().columns) == list(COMPARE_COLUMNS)
    assert cmp.loc["riad", "delta_mean"] == pytest.approx(-0.2)
    # no per-image scores: the CI is the t-interval over the two seeds' differences
    assert set(cmp["ci_method"]) == {"t-interval over 2 seeds"}
    assert cmp.loc["riad", "verdict"] == "supports"  # paper: RIAD lower, measured lower (CI below 0)
    assert cmp.loc["riad", "verdict_reason"] == "CI below 0"
    assert cmp.loc["riad", "seed_deltas"] == {0: pytest.approx(-0.2), 1: pytest.approx(-0.2)}
    assert cmp.loc["riad", "excludes_zero"] and "*" in cmp.loc["riad", "measured"]
    assert cmp.loc["pixel_map", "verdict"] == "contradicts"  # paper: pixel maps lower, measured higher
    # "similar": +0.005 and -0.01 give mean -0.0025, but two seeds' t-interval is about +-0.095
    d = [0.005, -0.01]
    half = 12.706204736174707 * math.sqrt(sum((x - sum(d) / 2) ** 2 for x in d)) / math.sqrt(2)
    assert cmp.loc["std_conv", "delta_low"] == pytest.approx(sum(d) / 2 - half, abs=1e-9)
    assert cmp.loc["std_conv", "delta_high"] == pytest.approx(sum(d) / 2 + half, abs=1e-9)
    assert cmp.loc["std_conv", "verdict"] == "not enough evidence"
    assert cmp.loc["std_conv", "verdict_reason"].startswith("CI wider than the ±3.0 band; minimum detectable")
    assert cmp.loc["feature_map", "verdict"] == "supports"  # CI [-0.005, 0.008] inside +-0.03
    assert cmp.loc["alpha_0", "verdict"] == "no claim"  # no claim in the paper
    assert "esad" not in cmp.index
    # one seed, no scores: no CI, and a point estimate alone decides nothing
    one = ablation.compare_to_base(pd.DataFrame([r for r in rows if r["seed"] == 0]), "m").set_index(
        "variant"
    )
    assert one.loc["riad", "verdict"] == "not enough evidence" and math.isnan(one.loc["riad", "delta_low"])
    assert one.loc["riad", "verdict_reason"].startswith("no interval")


@pytest.mark.parametrize(
    "expected, low, high, verdict",
    [
        ("lower", -0.05, -0.001, "supports"),  # the whole CI below 0
        ("lower", 0.001, 0.05, "contradicts"),  # the whole CI above 0: the variant beats esad
        ("lower", -0.05, 0.02, "not enough evidence"),  # includes 0, leaves the band
        ("lower", -0.05, 0.0, "not enough evidence"),  # touches 0: 0 is inside the closed CI
        ("lower", 0.0, 0.03, "not enough evidence"),
        ("lower", -0.008, 0.006, "equivalent"),  # includes 0, inside the band: any effect is < tolerance
        ("lower", -0.01, 0.01, "equivalent"),  # exactly the band: inside (closed)
        ("similar", -0.01, 0.01, "supports"),  # exactly the band: inside (closed)
        ("similar", -0.004, 0.009, "supports"),
        ("similar", 0.002, 0.008, "supports"),  # excludes 0 but within tolerance: still "similar"
        ("similar", 0.011, 0.05, "contradicts"),  # wholly above the band
        ("similar", -0.08, -0.02, "contradicts"),  # wholly below the band
        ("similar", -0.03, 0.03, "not enough evidence"),  # wider than the band (0.06 > 0.02)
        ("similar", 0.005, 0.015, "not enough evidence"),  # narrower, but crosses the band's edge
        ("similar", 0.003, 0.05, "not enough evidence"),  # excludes 0, partly inside the band
        ("lower", math.nan, math.nan, "not enough evidence"),  # no interval: nothing decided
        ("similar", math.nan, math.nan, "not enough evidence"),
        (None, -0.5, -0.4, "no claim"),
    ],
)
def test_claim_verdict_rules(expected, low, high, verdict) -> None:
    assert ablation.claim_verdict(expected, low, high, tolerance=0.01) == verdict


def test_claim_verdict_tolerance_reasons_and_errors() -> None:
    assert ablation.SIMILAR_TOLERANCE == 0.03  # the equivalence margin: at most 3 points
    assert ablation.claim_verdict("similar", -0.035, 0.035) == "not enough evidence"
    assert ablation.claim_verdict("similar", -0.025, 0.025) == "supports"
    assert ablation.claim_verdict("lower", -0.025, 0.025) == "equivalent"
    assert ablation.claim_verdict("similar", 0.0, 0.0, tolerance=0.0) == "supports"
    r = lambda *a: ablation.verdict_reason(*a, tolerance=0.01)  # noqa: E731
    assert r("lower", -0.05, -0.01) == "CI below 0"
    assert r("lower", 0.01, 0.05) == "CI above 0: the variant scores higher"
    # CI width 0.06: se = 0.06 / (2 * 1.96); MDE = (1.96 + 0.8416) * se = 4.29 points
    assert r("lower", -0.01, 0.05) == "CI includes 0 and leaves the ±1.0 band; minimum detectable effect 4.3"
    assert r("lower", -0.005, 0.005) == "CI inside the ±1.0 band"
    assert r("similar", -0.005, 0.005) == "CI inside the ±1.0 band"
    assert r("similar", 0.02, 0.05) == "CI outside the ±1.0 band (higher)"
    assert r("similar", -0.05, -0.02) == "CI outside the ±1.0 band (lower)"
    assert r("similar", -0.03, 0.03) == "CI wider than the ±1.0 band; minimum detectable effect 4.3"
    assert r("similar", 0.005, 0.015).startswith("CI crosses an edge of the ±1.0 band; minimum detectable")
    assert r("lower", math.nan, math.nan).startswith("no interval")
    assert r(None, 0.0, 1.0) == "the paper makes no claim to check"
    # the minimum detectable effect, by hand: (z_0.975 + z_0.8) * (high - low) / (2 z_0.975)
    by_hand = (1.959964 + 0.841621) * 0.06 / 3.919928
    assert ablation.minimum_detectable_effect(-0.01, 0.05) == pytest.approx(by_hand)
    with pytest.raises(ValueError, match="expected must be one of"):
        ablation.claim_verdict("higher", 0.0, 1.0)
    with pytest.raises(ValueError, match="low bound"):
        ablation.claim_verdict("lower", 0.2, 0.1)
    with pytest.raises(ValueError, match="tolerance"):
        ablation.claim_verdict("similar", 0.0, 0.1, tolerance=-0.01)


def test_verdict_counts_and_sentence() -> None:
    vs = ["supports", "not enough evidence", "contradicts", "equivalent", "not enough evidence", "no claim"]
    assert count_verdicts(vs) == {"supports": 1, "contradicts": 1, "equivalent": 1, "not enough evidence": 2}
    assert count_verdicts([]) == {"supports": 0, "contradicts": 0, "equivalent": 0, "not enough evidence": 0}
    with pytest.raises(ValueError, match="unknown verdict"):
        count_verdicts(["yes"])
    assert ablation.grid_description(["b", "a", "a"], [1, 0]) == "2 categories (a, b) x 2 seeds (0, 1)"
    assert ablation.grid_description(["a"], [3]) == "1 category (a) x 1 seed (3)"
    cats = ["juice_bottle", "breakfast_box"]
    got = ablation.verdict_sentence(vs, "image_auroc.structural", cats, [0, 1], "demo")
    assert got == (
        "image_auroc.structural, demo profile, 2 categories (breakfast_box, juice_bottle) x 2 seeds (0, 1): "
        "of 5 checkable claims, 1 supported, 1 contradicted, 1 equivalent within ±3 points, "
        "2 not enough evidence (95 % CIs of the difference to esad)."
    )


def test_read_results_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="esad ablate"):
        ablation.read_results(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an ablation results table"):
        ablation.read_results(tmp_path / "bad.csv")
    # a table without the CI columns is not one run_grid writes
    (tmp_path / "old.csv").write_text(",".join(KEY_COLUMNS) + "\nesad,c,0,m,0.5,smoke,k\n")
    with pytest.raises(ValueError, match="ci_low"):
        ablation.read_results(tmp_path / "old.csv")


# ------------------------------------------------------------------------------------------
# confidence intervals from per-image scores (a fake evaluation that writes scores.csv)
N_IMAGES = {"good": 14, "structural": 9, "logical": 7}


def _fake_scores(cfg) -> pd.DataFrame:
    """Deterministic per-image scores of a run: anomalous images shifted by a config-dependent amount."""
    key = int(1000 * cfg.fill_alpha) + 7 * cfg.seed + 31 * cfg.num_masks + (cfg.score_map == "pixel")
    rng = np.random.default_rng(key)
    labels = [n for n, k in N_IMAGES.items() for _ in range(k)]
    shift = {"good": 0.0, "structural": 0.5 + cfg.fill_alpha, "logical": 0.2}
    score = [rng.normal() + shift[n] for n in labels]
    paths = [f"{n}/{i:03d}.png" for i, n in enumerate(labels)]
    return pd.DataFrame(
        {"path": paths, "label": labels, "anomalous": [int(n != "good") for n in labels], "score": score}
    )


class ScoreRecorder(Recorder):
    def evaluate(self, cfg, model_dir: Path, run_dir: Path) -> dict:
        m = super().evaluate(cfg, model_dir, run_dir)
        sc = _fake_scores(cfg)
        sc.to_csv(Path(run_dir) / SCORES_FILE, index=False)
        m["image_auroc"] = metrics.image_auroc_by_type(sc["score"].to_numpy(), sc["label"])
        return m


@pytest.fixture
def srec(monkeypatch) -> ScoreRecorder:
    r = ScoreRecorder()
    monkeypatch.setattr(ablation.steps, "train_model", r.train)
    monkeypatch.setattr(ablation.steps, "evaluate_model", r.evaluate)
    return r


def _run_scores(tmp_path: Path, variant: str, category: str, seed: int) -> pd.DataFrame:
    return pd.read_csv(tmp_path / "runs" / variant / category / f"seed{seed}" / SCORES_FILE)


def test_results_csv_has_each_runs_image_ci(srec: ScoreRecorder, tmp_path: Path) -> None:
    ablation.run_grid(BASE, ["esad", "alpha_0"], ["pushpins"], [0], tmp_path, progress=False)
    df = ablation.read_results(tmp_path / "results.csv")
    sc = _run_scores(tmp_path, "alpha_0", "pushpins", 0)
    direct = uncertainty.image_auroc_ci_by_type(
        sc["score"], sc["label"], CI_N_BOOT, uncertainty.category_seed(CI_SEED, "pushpins")
    )
    rows = df[df.variant == "alpha_0"].set_index("metric")
    for kind in ("structural", "logical", "mean"):
        r = rows.loc[f"image_auroc.{kind}"]
        assert (r["ci_low"], r["ci_high"]) == (direct[kind]["low"], direct[kind]["high"])
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
        assert r["value"] == pytest.approx(direct[kind]["value"], abs=1e-12)
    assert rows.loc[["au_pro", "au_spro.structural"], "ci_low"].isna().all()  # no maps: no CI


def test_summary_ci_and_paired_difference_one_seed(srec: ScoreRecorder, tmp_path: Path) -> None:
    ablation.run_grid(BASE, ["esad", "alpha_0", "feature_map"], ["pushpins"], [0], tmp_path, progress=False)
    df = ablation.read_results(tmp_path / "results.csv")
    md = (tmp_path / "summary.md").read_text()
    s_base, s_a0 = (_run_scores(tmp_path, v, "pushpins", 0) for v in ("esad", "alpha_0"))
    # one seed, one category: the cell is the run's own percentile interval
    seed = uncertainty.category_seed(CI_SEED, "pushpins")  # every category draws its own resamples
    ci = uncertainty.image_auroc_ci_by_type(s_base["score"], s_base["label"], seed=seed)["structural"]
    assert f"| esad | {uncertainty.format_ci(ci)} |" in md
    # the difference to esad: the paired bootstrap of the two runs' scores
    cmp = ablation.compare_to_base(df, "image_auroc.structural", scores=ablation.collect_scores(tmp_path))
    cmp = cmp.set_index("variant")
    paired = uncertainty.paired_image_auroc_by_type(
        s_a0["score"], s_a0["label"], s_base["score"], s_base["label"], s_a0["path"], s_base["path"],
        seed=seed,
    )["structural"]
    assert cmp.loc["alpha_0", "delta_low"] == pytest.approx(paired["low"], abs=1e-12)
    assert cmp.loc["alpha_0", "delta_high"] == pytest.approx(paired["high"], abs=1e-12)
    assert cmp.loc["alpha_0", "delta_mean"] == pytest.approx(paired["diff"], abs=1e-12)
    assert cmp.loc["alpha_0", "ci_method"] == "paired bootstrap over test images"
    assert uncertainty.format_diff(paired) in md
    # feature_map has esad's config: the same scores, a paired difference of exactly [0, 0]
    fm = cmp.loc["feature_map"]
    assert (fm["delta_low"], fm["delta_high"], fm["excludes_zero"]) == (0.0, 0.0, False)
    assert fm["verdict"] == "supports"
    # without scores the same call falls back to no CI (one seed)
    assert (
        ablation.compare_to_base(df, "image_auroc.structural")
        .set_index("variant")
        .loc["alpha_0", "ci_method"]
        .startswith("none")
    )


def test_summary_ci_combines_seeds_and_images(srec: ScoreRecorder, tmp_path: Path) -> None:
    cats, seeds = ["pushpins", "juice_bottle"], [0, 1, 2]
    ablation.run_grid(BASE, ["esad", "alpha_0"], cats, seeds, tmp_path, progress=False)
    df = ablation.read_results(tmp_path / "results.csv")
    scores = ablation.collect_scores(tmp_path)
    boot = ablation.ImageBootstrap(df, scores)
    # by hand: per category one set of resamples (shared by every run of it, seeded per category), the
    # category mean per seed, then uncertainty.seed_image_interval over the seeds
    weights = {}
    for c in cats:
        names = _run_scores(tmp_path, "esad", c, 0)["label"].to_numpy()
        idx = uncertainty.resample_indices(names, CI_N_BOOT, uncertainty.category_seed(CI_SEED, c))
        weights[c] = uncertainty.resample_weights(idx)

    def per_seed(v: str, s: int):
        vals, samples = [], []
        for c in cats:
            sc = _run_scores(tmp_path, v, c, s)
            val, smp = uncertainty.auroc_by_type_resampled(
                sc["score"].to_numpy(), sc["label"].to_numpy(), weights[c]
            )
            vals.append(val["structural"])
            samples.append(smp["structural"])
        return np.mean(vals), np.mean(samples, axis=0)

    esad = [per_seed("esad", s) for s in seeds]
    a0 = [per_seed("alpha_0", s) for s in seeds]
    want = uncertainty.seed_image_interval([v for v, _ in esad], np.stack([b for _, b in esad]))
    got = boot.interval(df, "esad", "image_auroc.structural")
    assert (got["low"], got["high"]) == (pytest.approx(want["low"]), pytest.approx(want["high"]))
    assert got["value"] == pytest.approx(
        df[(df.variant == "esad") & (df.metric == "image_auroc.structural")]["value"].mean()
    )
    want_d = uncertainty.seed_image_interval(
        [x - y for (x, _), (y, _) in zip(a0, esad)], np.stack([bx - by for (_, bx), (_, by) in zip(a0, esad)])
    )
    cmp = ablation.compare_to_base(df, "image_auroc.structural", scores=boot).set_index("variant")
    assert cmp.loc["alpha_0", "delta_low"] == pytest.approx(want_d["low"])
    assert cmp.loc["alpha_0", "delta_high"] == pytest.approx(want_d["high"])
    assert cmp.loc["alpha_0", "ci_method"] == "paired bootstrap over test images + 3 seeds"
    md = (tmp_path / "summary.md").read_text()
    assert uncertainty.format_ci(got) in md
    assert "image_auroc.structural per category" in md
    n_checked = int((cmp["verdict"] != "no claim").sum())  # alpha_0: the paper makes no claim
    assert (
        f"image_auroc.structural, smoke profile, 2 categories (juice_bottle, pushpins) x 3 seeds (0, 1, 2): "
        f"of {n_checked} checkable claim" in md
    )


def test_interval_table_matches_the_bootstrap_and_seed_interval(srec: ScoreRecorder, tmp_path: Path) -> None:
    cats, seeds = ["pushpins", "juice_bottle"], [0, 1]
    ablation.run_grid(BASE, ["esad", "alpha_1", "pixel_map"], cats, seeds, tmp_path, progress=False)
    df = ablation.read_results(tmp_path / "results.csv")
    boot = ablation.ImageBootstrap(df, ablation.collect_scores(tmp_path))
    t = ablation.interval_table(df, boot, metrics=["image_auroc.structural", "au_pro"])
    assert list(t.columns) == list(INTERVAL_COLUMNS)
    assert set(t["metric"]) == {"image_auroc.structural", "au_pro"} and len(t) == 3 * 2
    t = t.set_index(["variant", "metric"])
    for v in ("esad", "alpha_1", "pixel_map"):
        want = boot.interval(df, v, "image_auroc.structural")
        row = t.loc[(v, "image_auroc.structural")]
        assert (row["low"], row["high"]) == (want["low"], want["high"])
        assert row["value"] == pytest.approx(want["value"])
        assert row["ci_method"] == "bootstrap over test images + 2 seeds"
        # au_pro has no per-image interval: the t-interval over the two seeds' category means
        per_seed = [
            df[(df.variant == v) & (df.metric == "au_pro") & (df.seed == s)]["value"].mean() for s in seeds
        ]
        agg = uncertainty.aggregate_seeds(per_seed)
        row = t.loc[(v, "au_pro")]
        assert (row["low"], row["high"]) == (pytest.approx(agg["low"]), pytest.approx(agg["high"]))
        assert row["ci_method"] == "t-interval over 2 seeds" and row["n_categories"] == 2
    assert seed_values(df)[("esad", "au_pro")] == pytest.approx(
        [df[(df.variant == "esad") & (df.metric == "au_pro") & (df.seed == s)]["value"].mean() for s in seeds]
    )
    # one seed and no scores: no interval at all
    one = ablation.interval_table(df[df.seed == 0], metrics=["au_pro"]).set_index("variant")
    assert one["low"].isna().all() and set(one["ci_method"]) == {"none (one seed, no per-image scores)"}


def test_summary_reports_runs_scored_on_other_images(srec: ScoreRecorder, tmp_path: Path) -> None:
    ablation.run_grid(BASE, ["esad", "alpha_0"], ["pushpins"], [0], tmp_path, progress=False)
    p = tmp_path / "runs/esad/pushpins/seed0" / SCORES_FILE
    sc = pd.read_csv(p)
    sc.loc[3, "path"] = "good/other.png"
    sc.to_csv(p, index=False)
    df = ablation.read_results(tmp_path / "results.csv")
    md = summary_markdown(df, scores=ablation.collect_scores(tmp_path))
    # the alphabetically first run (alpha_0) is the reference; esad differs from it at row 3
    assert "different images (first difference at row 3" in md
    cmp = ablation.compare_to_base(df, "image_auroc.structural", scores=ablation.collect_scores(tmp_path))
    assert cmp.set_index("variant").loc["alpha_0", "ci_method"].startswith("none")


# ------------------------------------------------------------------------------------------
# CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esad")
    register(p.add_subparsers(dest="command"))
    return p


def test_cli_runs_grid_and_validates(rec: Recorder, tmp_path: Path, capsys) -> None:
    p = _parser()
    args = p.parse_args(
        ["ablate", "--variants", "esad,alpha_0", "--categories", "pushpins", "--seeds", "0,1"]
        + ["--profile", "smoke", "--out", str(tmp_path), "--set", "epochs=1", "--set", "cutout_sizes=[2,4]"]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "4 run(s) evaluated" in out and "Ablation summary" in out
    df = ablation.read_results(tmp_path / "results.csv")
    assert set(df["variant"]) == {"esad", "alpha_0"} and set(df["seed"]) == {0, 1}
    assert {d["epochs"] for _, _, d in rec.train_calls} == {1}
    assert {tuple(d["cutout_sizes"]) for _, _, d in rec.train_calls} == {(2, 4)}

    bad = p.parse_args(["ablate", "--variants", "esad,bogus", "--out", str(tmp_path)])
    assert bad.func(bad) == 2
    assert "bogus" in capsys.readouterr().err
    no_out = p.parse_args(["ablate"])
    assert no_out.func(no_out) == 2
    lst = p.parse_args(["ablate", "--list"])
    assert lst.func(lst) == 0 and "riad" in capsys.readouterr().out


def test_base_config_explicit_profile_wins(monkeypatch) -> None:
    monkeypatch.setenv("ESAD_PROFILE", "smoke")
    assert base_config("demo", None, []).profile == "demo"
    assert base_config(None, None, []).profile == "smoke"
    assert base_config(None, "/some/root", ["fill_alpha=0.3"]).dataset == "/some/root"
    with pytest.raises(ValueError, match="no_such_field"):
        base_config(None, None, ["no_such_field=1"])


# ------------------------------------------------------------------------------------------
# one real grid: training + evaluation of the library, 2 variants sharing one model
def test_real_smoke_grid(tmp_path: Path) -> None:
    run_io = pytest.importorskip("esad_lib.run_io")
    evaluation = pytest.importorskip("esad_lib.evaluation")
    cfg = get_config("smoke", epochs=1, max_test_images=2, cutout_sizes=(8,))
    rep = ablation.run_grid(cfg, ["esad", "alpha_1"], ["pushpins"], [0], tmp_path, progress=False)
    assert len(set(rep.trained)) == 1  # alpha_1 reuses the esad model
    df = ablation.read_results(tmp_path / "results.csv")
    assert set(df["variant"]) == {"esad", "alpha_1"}
    assert {"image_auroc.structural", "au_spro.structural", "n_params"} <= set(df["metric"])
    auc = df[df.metric == "image_auroc.structural"]["value"]
    assert ((auc >= 0) & (auc <= 1)).all()
    assert (tmp_path / "runs/esad/pushpins/seed0/scores.csv").exists()
    grid = json.loads((tmp_path / ablation.GRID_FILE).read_text())  # what the call did, and its time
    assert (grid["runs"], grid["evaluated"], grid["trained"]) == (2, 2, 1)
    assert 0 < grid["seconds"] <= rep.seconds + 0.1
    # the real scores.csv feeds the intervals: each run's CI in results.csv, paired Δ in summary.md
    ci = df[df.metric == "image_auroc.structural"]
    assert (ci["ci_low"] <= ci["value"]).all() and (ci["value"] <= ci["ci_high"]).all()
    assert "paired bootstrap over test images" in (tmp_path / "summary.md").read_text()
    # the grid's alpha_1 numbers == scoring the trained model directly with fill_alpha = 1
    spec = ablation.expand_grid(cfg, ["alpha_1"], ["pushpins"], [0])[0]
    model, _ = run_io.load_run(spec.model_dir(tmp_path / "models"))
    direct, _ = evaluation.evaluate_model(model, spec.cfg, progress=False)
    got = df[df.variant == "alpha_1"].set_index("metric")["value"]
    assert got["image_auroc.structural"] == pytest.approx(direct["image_auroc"]["structural"])
    assert got["au_spro.structural"] == pytest.approx(direct["au_spro"]["structural"])
    assert got["n_params"] == sum(p.numel() for p in model.parameters())


class MedianDiff:
    """A reader's own detector, as a notebook would define it: the distance of each pixel to the
    per-pixel median of the training images (largest over the colour channels)."""

    name = "median_diff"

    def fit(self, images):
        self.median = images.median(dim=0).values  # [3,H,W]
        return self

    def anomaly_maps(self, images):
        return (images - self.median).abs().amax(dim=1)  # [B,H,W]


def test_real_grid_with_training_free_and_readers_variants(tmp_path: Path) -> None:
    """The "patchcore" variant and a reader's detector train nothing; a reader's config diff
    reuses ESAD's model; all are evaluated by the same protocol and compared with ESAD (paired)."""
    cfg = get_config("smoke", epochs=1, max_test_images=2, cutout_sizes=(8,))
    mine = ablation.register_variant(
        ablation.Variant("my_alpha", {"fill_alpha": 0.3}, "mine", "Test fill weight 0.3.", "Mine.", "lower")
    )
    median = ablation.Variant(
        "median_diff",
        {},
        "mine",
        "Per-pixel median difference.",
        "Mine too.",
        "lower",
        detector=lambda c: MedianDiff(),
    )
    with pytest.raises(ValueError, match="built-in"):
        ablation.register_variant(ablation.Variant("esad", {}, "x", "x"))
    variants = ["esad", "patchcore", mine.name, median]
    rep = ablation.run_grid(cfg, variants, ["pushpins"], [0], tmp_path, progress=False)
    assert len(set(rep.trained)) == 1  # only ESAD's model
    m = json.loads((tmp_path / "runs/patchcore/pushpins/seed0/metrics.json").read_text())
    assert m["method"] == "patchcore" and m["feature_extractor"] == "efficientnet_lite0"
    mine_m = json.loads((tmp_path / "runs/median_diff/pushpins/seed0/metrics.json").read_text())
    assert mine_m["method"] == "median_diff" and set(mine_m) >= set(m) - {"patchcore"}  # one schema
    df = ablation.read_results(tmp_path / "results.csv")
    assert set(df["variant"]) == {"esad", "patchcore", "my_alpha", "median_diff"}
    summary = (tmp_path / "summary.md").read_text()
    assert "patchcore" in summary and "| median_diff | Mine too. |" in summary
    cmp = ablation.compare_to_base(df, "image_auroc.structural", scores=ablation.collect_scores(tmp_path))
    assert cmp.set_index("variant").loc["median_diff", "ci_method"] == "paired bootstrap over test images"

"""Training seeds in comparisons of methods (esad_lib.uncertainty.seeds, `esad demo --seeds`) and the
power calculation of `esad demo-power`: the seed-and-image interval's coverage on simulated data with
a known true difference, the test-set size on a hand-computed example, and a demo.json's rows."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.seed_interval_coverage import (
    bootstrap_aurocs,
    simulate_coverage,
    stratum_weights,
    true_difference,
)
from esad_lib.cli import main as cli_main
from esad_lib.demo import Comparison, demo_power, paired_differences, seeds_report
from esad_lib.evaluation import SCORES_FILE, scores_csv
from esad_lib.uncertainty import weighted_auroc
from esad_lib.uncertainty.seeds import combine_seeds, images_for_halfwidth, seed_image_interval

#: a 95 % interval's measured coverage must lie here (1000 replications: the coverage's own sd is 0.007)
BAND = (0.91, 0.985)


def test_seed_and_image_interval_covers_the_true_difference_where_either_part_alone_fails() -> None:
    # seeds dominate (tau 0.6): the images-only interval misses the seed variance
    seeds_matter = simulate_coverage(3, 0.6, 40, reps=1000, seed=1)
    # images dominate (tau 0.1): the seeds-only interval misses the image variance the seeds share
    images_matter = simulate_coverage(3, 0.1, 40, reps=1000, seed=2)
    for r in (seeds_matter, images_matter):
        assert BAND[0] <= r["seeds+images, Satterthwaite t"] <= BAND[1], r
    assert seeds_matter["images only"] < 0.88, seeds_matter
    assert images_matter["seeds only"] < 0.88, images_matter
    assert seeds_matter["se_seed"] > 0.5 * seeds_matter["se_image"]  # the regimes are what they claim
    assert images_matter["se_seed"] < 0.5 * images_matter["se_image"]


def test_the_simulations_vectorised_auroc_is_the_librarys_weighted_auroc() -> None:
    rng = np.random.default_rng(3)
    n, b = 7, 5
    scores = np.round(rng.normal(size=(2, 3, 2 * n)), 1)  # rounded: ties count one half
    w_good, w_anom = stratum_weights(rng, 2, b, n), stratum_weights(rng, 2, b, n)
    got = bootstrap_aurocs(scores, n, w_good, w_anom)
    labels = np.repeat([0, 1], n)
    for r in range(2):
        for s in range(3):
            want = weighted_auroc(scores[r, s], labels, np.concatenate([w_good[r], w_anom[r]], axis=1))
            np.testing.assert_allclose(got[r, s], want, rtol=0, atol=1e-12)


def test_true_difference_is_the_mean_auroc_over_seeds() -> None:
    # Phi(mu / sqrt(2 + tau^2)) = E_u Phi((mu + u) / sqrt 2), u ~ N(0, tau^2): check by quadrature
    from statistics import NormalDist

    u, w = np.polynomial.hermite_e.hermegauss(60)
    mean_a = sum(wi * NormalDist().cdf((1.2 + 0.6 * ui) / math.sqrt(2)) for ui, wi in zip(u, w)) / w.sum()
    assert true_difference(0.6) == pytest.approx(mean_a - NormalDist().cdf(0.8 / math.sqrt(2)), abs=1e-12)


def test_satterthwaite_goes_from_the_t_of_the_seeds_to_the_normal() -> None:
    rng = np.random.default_rng(0)
    values = [0.70, 0.74, 0.78]
    seeds_only = seed_image_interval(values, np.tile([[0.70], [0.74], [0.78]], (1, 500)), satterthwaite=True)
    # no image variance: df = S - 1 = 2 and the half-width t_{2, 0.975} s / sqrt(S) (aggregate_seeds')
    assert seeds_only["df"] == pytest.approx(2.0)
    assert seeds_only["high"] - seeds_only["value"] == pytest.approx(4.302652729911275 * 0.04 / math.sqrt(3))
    noisy = rng.normal(size=(3, 4000)) * 0.2 + np.array([[0.70], [0.74], [0.78]])
    images = seed_image_interval(values, noisy, satterthwaite=True)
    normal = seed_image_interval(values, noisy)
    assert images["df"] > 100 and images["se"] == normal["se"]
    assert images["high"] - images["low"] == pytest.approx(normal["high"] - normal["low"], rel=0.01)


def test_combine_seeds_keeps_the_keys_every_seed_has() -> None:
    rng = np.random.default_rng(1)
    per_seed = [{"pushpins": {"diff": d, "samples": d + 0.05 * rng.normal(size=300)},
                 "mean": {"diff": d / 2, "samples": d / 2 + 0.02 * rng.normal(size=300)}}
                for d in (0.10, 0.12, 0.08)]  # fmt: skip
    per_seed[1]["screw_bag"] = {"diff": 0.3, "samples": np.full(300, 0.3)}
    out = combine_seeds(per_seed)
    assert set(out) == {"pushpins", "mean"}
    assert out["pushpins"]["diff"] == pytest.approx(0.10) and out["pushpins"]["excludes_zero"]
    want = seed_image_interval([0.05, 0.06, 0.04], np.stack([p["mean"]["samples"] for p in per_seed]),
                               satterthwaite=True)  # fmt: skip
    assert (out["mean"]["low"], out["mean"]["high"]) == (want["low"], want["high"])


def test_images_for_halfwidth_by_hand() -> None:
    # one seed: SE 3.0 points with 40 images per type; z = 1.959964; 40 * (1.959964 * 3 / 3.5)^2 = 112.9
    assert images_for_halfwidth(3.0, 40, 3.5) == 113
    # already narrow enough: 40 * (1.959964 / 3.5)^2 = 12.5, fewer images would do
    assert images_for_halfwidth(1.0, 40, 3.5) == 13
    # with seeds: 3.5^2 / z^2 = 3.18889; minus se_seed^2 = 1 leaves 2.18889; 40 * 9 / 2.18889 = 164.5
    assert images_for_halfwidth(3.0, 40, 3.5, se_seed=1.0) == 165
    assert images_for_halfwidth(3.0, 40, 3.5, se_seed=1.8) == math.inf  # z 1.8 = 3.53 > 3.5: more seeds
    with pytest.raises(ValueError, match="half_width"):
        images_for_halfwidth(3.0, 40, 0.0)


def _demo_json(path: Path, means: dict, seeds: list[int] | None = None, counts: int = 40) -> Path:
    esad = {c: {"counts": {"good": counts, "structural": counts, "logical": counts}} for c in ("a", "b")}
    blob: dict = {"provenance": {"seeds": seeds} if seeds else {}}
    blob["paired"] = {"structural_image_auroc": {"mean": means}}
    blob["metrics"] = {str(s): {"esad": esad} for s in seeds} if seeds else {"esad": esad}
    path.write_text(json.dumps(blob))
    return path


def test_demo_power_reads_the_mean_differences_of_a_demo_json(tmp_path) -> None:
    one = {"RIAD": {"diff": 0.053, "low": -0.009, "high": 0.114, "se": 0.03}}
    (row,) = demo_power(_demo_json(tmp_path / "one.json", one))
    assert row["method"] == "RIAD" and row["n_now"] == 40 and row["n_needed"] == 113
    assert row["half_width_now"] == pytest.approx(6.15) and row["z_se"] == pytest.approx(1.959964 * 3.0)
    seeds = {"RIAD": {"diff": 0.05, "low": 0.0, "high": 0.1, "se": 0.0316, "se_image": 0.03, "se_seed": 0.01}}
    (row,) = demo_power(_demo_json(tmp_path / "seeds.json", seeds, seeds=[0, 1, 2]))
    assert row["se_seed"] == pytest.approx(1.0) and row["n_needed"] == 165
    with pytest.raises(FileNotFoundError, match="esad demo"):
        demo_power(tmp_path / "missing.json")


def _run(folder: Path, names: list[str], scores: np.ndarray) -> Path:
    """A run folder holding only scores.csv (what the paired comparison reads)."""
    rows = [{"path": f"/d/test/{n}/{i:03d}.png", "label": n, "anomalous": int(n != "good"), "score": float(s)}
            for i, (n, s) in enumerate(zip(names, scores))]  # fmt: skip
    folder.mkdir(parents=True)
    (folder / SCORES_FILE).write_text(scores_csv(SimpleNamespace(to_rows=lambda: rows)))
    return folder


def _comparison(tmp: Path, seed: int, names: list[str]) -> Comparison:
    """ESAD (a seed-dependent shift) and naive (the same scores every seed) on two categories."""
    cmp = Comparison()
    for c, cat in enumerate(("pushpins", "screw_bag")):
        rng = np.random.default_rng(10 * c)  # the category's images
        base = rng.random(len(names)) + 0.3 * (np.asarray(names) == "structural")
        shift = 0.2 * seed * (np.asarray(names) == "structural")
        noise = np.random.default_rng(100 + seed).random(len(names)) * 0.3
        for method, s in (("esad", base + shift + noise), ("naive", base)):
            d = _run(tmp / f"seed{seed}" / cat / method, names, s)
            cmp.add(method, cat, {"image_auroc": {"structural": _auroc(names, s)}}, d)
    return cmp


def _auroc(names: list[str], scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    keep = np.asarray(names) != "logical"
    return float(roc_auc_score(np.asarray(names)[keep] == "structural", scores[keep]))


def test_seeds_report_combines_each_seeds_paired_bootstrap(tmp_path) -> None:
    names = ["good"] * 12 + ["structural"] * 10 + ["logical"] * 6
    cmps = {s: _comparison(tmp_path, s, names) for s in (0, 1, 2)}
    text, paired = seeds_report(cmps, "t")
    per_seed = [paired_differences(c.dirs["esad"], {"naive": c.dirs["naive"]}, keep_samples=True)
                for c in cmps.values()]  # fmt: skip
    want = combine_seeds([{**d["naive"], "mean": m["naive"]} for d, m in per_seed])
    got = paired["structural_image_auroc"]
    for key, g in [("pushpins", got["per_category"]["naive"]["pushpins"]), ("mean", got["mean"]["naive"])]:
        assert (g["diff"], g["low"], g["high"]) == (want[key]["diff"], want[key]["low"], want[key]["high"])
        assert "samples" not in g
    auroc = {(s, m, cat): x["image_auroc"]["structural"] for s, c in cmps.items() for m in c.metrics
             for cat, x in c.metrics[m].items()}  # fmt: skip
    by_hand = np.mean([auroc[s, "esad", cat] - auroc[s, "naive", cat] for s, _, cat in auroc])
    assert got["mean"]["naive"]["diff"] == pytest.approx(by_hand)
    assert got["mean"]["naive"]["n_seeds"] == 3 and "Satterthwaite" in got["mean"]["naive"]["method"]
    assert set(got["per_seed"]) == {"0", "1", "2"}
    assert "| 2 |" in text and "ESAD − naive" in text and "over 3 training seeds" in text
    # another test set for one seed: its resamples would not be the others'; refused
    other = _comparison(tmp_path / "other", 1, names[::-1])
    with pytest.raises(ValueError, match="other test images"):
        seeds_report({0: cmps[0], 1: other}, "t")


def test_esad_demo_seeds_needs_two_seeds_and_demo_power_prints_the_table(tmp_path, capsys) -> None:
    assert cli_main(["demo", "--seeds", "3"]) == 2
    assert cli_main(["demo", "--seeds", "0", "1", "--set", "seed=2"]) == 2
    assert "two or more training seeds" in capsys.readouterr().err
    one = {"RIAD": {"diff": 0.053, "low": -0.009, "high": 0.114, "se": 0.03}}
    assert cli_main(["demo-power", str(_demo_json(tmp_path / "d.json", one)), "--half-width", "3.5"]) == 0
    out = capsys.readouterr().out
    assert "| ESAD − RIAD | +5.3 [-0.9, 11.4] | 6.15 | 3.00 | 0.00 | 5.88 | 40 | 113 |" in out


def test_run_demo_over_two_seeds_end_to_end(tmp_path) -> None:
    """``run_demo(seeds=...)`` trains each seed, scores the same test images and writes one report whose
    per-seed rows are each seed's own single-seed comparison."""
    from esad_lib.demo import run_demo

    res = run_demo(profile="smoke", categories=["pushpins"], progress=False, out=tmp_path / "d", seeds=[0, 1])
    assert (tmp_path / "d" / "seed0" / "pushpins" / "naive").is_dir() and (tmp_path / "d" / "seed1").is_dir()
    blob = json.loads((tmp_path / "d" / "demo.json").read_text())
    assert blob["provenance"]["seeds"] == [0, 1] and set(blob["metrics"]) == {"0", "1"}
    paired = blob["paired"]["structural_image_auroc"]
    assert set(paired["per_seed"]) == {"0", "1"} and "samples" not in json.dumps(paired)
    mean = paired["mean"]["naive"]
    per_seed = [paired["per_seed"][s]["mean"]["naive"]["diff"] for s in ("0", "1")]
    assert mean["diff"] == pytest.approx(np.mean(per_seed)) and mean["n_seeds"] == 2
    assert mean["low"] <= mean["diff"] <= mean["high"]
    assert "training seeds 0, 1" in res.text and "| 1 |" in res.text
    (row,) = demo_power(tmp_path / "d" / "demo.json")  # a seeds demo.json feeds the power calculation
    assert row["n_now"] == 4 and row["se_seed"] >= 0

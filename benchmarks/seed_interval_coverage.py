"""Coverage of the seed-and-image interval of a paired AUROC difference, on simulated data with a
known true difference -- prints the measured coverage, asserts nothing (tests/test_seeds.py does).

    python benchmarks/seed_interval_coverage.py [--reps 1000] [--boot 200]

The model (one category; A a trained method with training-seed randomness, B a method without,
such as the naive baseline), per replication:

* a fresh test set: ``n`` good (y = 0) and ``n`` anomalous (y = 1) images; image i has a latent
  difficulty z_i ~ N(0, 1) shared by both methods and every seed (it makes the seeds' errors on one
  test set correlated, and the pairing useful);
* score of image i by method m trained with seed s: ``shift_ms * y_i + rho z_i + sqrt(1 - rho^2) e_msi``
  with e ~ N(0, 1); A's shift is ``mu_A + u_s``, u_s ~ N(0, tau^2) (the seed effect), B's is ``mu_B``
  and B scores the images once;
* the population AUROC of a shift mu is Phi(mu / sqrt 2), and over seeds
  E_u Phi((mu_A + u) / sqrt 2) = Phi(mu_A / sqrt(2 + tau^2)), so the true difference is
  ``delta = Phi(mu_A / sqrt(2 + tau^2)) - Phi(mu_B / sqrt 2)``;
* the estimate: per seed the paired difference AUROC_A,s - AUROC_B and its stratified bootstrap
  (the SAME resamples for every seed and both methods; ``bootstrap_aurocs`` computes
  ``uncertainty.weighted_auroc`` for all replications at once, checked equal in tests/test_seeds.py),
  then ``uncertainty.seeds.seed_image_interval`` (law of total variance), as the demo does.

Coverage = the share of replications whose 95 % interval holds ``delta``, for the interval with
Satterthwaite's t (the demo's), with the normal quantile, and two broken ones: the images only
(percentile interval of the seed-mean resamples) and the seeds only (``aggregate_seeds``'s
Student-t across seeds).
"""

from __future__ import annotations

import argparse
import math
import time
from statistics import NormalDist

import numpy as np

from esad_lib.uncertainty import percentile_interval, resample_weights
from esad_lib.uncertainty.seeds import aggregate_seeds, seed_image_interval

INTERVALS = ("seeds+images, Satterthwaite t", "seeds+images, normal", "images only", "seeds only")
#: (S seeds, tau, n images per type) printed by default; tau in units of the score's within-class sd.
SETTINGS = ((3, 0.0, 40), (3, 0.3, 40), (3, 0.6, 40), (3, 1.0, 40), (3, 0.6, 120), (5, 0.6, 40),
            (10, 0.6, 40))


def true_difference(tau: float, mu_a: float = 1.2, mu_b: float = 0.8) -> float:
    """delta = Phi(mu_A / sqrt(2 + tau^2)) - Phi(mu_B / sqrt(2)) (the module docstring's model)."""
    phi = NormalDist().cdf
    return phi(mu_a / math.sqrt(2.0 + tau**2)) - phi(mu_b / math.sqrt(2.0))


def bootstrap_aurocs(scores: np.ndarray, n: int, w_good: np.ndarray, w_anom: np.ndarray) -> np.ndarray:
    """Image AUROC of every replication, seed and resample at once: ``[R, S, B]``.

    scores ``[R, S, 2n]`` (first n good, then n anomalous); w_good, w_anom ``[R, B, n]``: each
    resample's multiplicities within its stratum (``uncertainty.weighted_auroc`` on each row).
    """
    good, anom = scores[..., :n], scores[..., n:]
    # c[r, s, p, g] = 1[s_g < s_p] + 0.5 1[s_g = s_p]  (anomalous p, good g)
    c = (anom[..., :, None] > good[..., None, :]) + 0.5 * (anom[..., :, None] == good[..., None, :])
    # AUROC_b = sum_pg w_bp c_pg w_bg / (sum_p w_bp sum_g w_bg), both sums n in a stratified resample
    t = w_anom[:, None].astype(np.float64) @ c  # [R, S, B, n]
    return (t * w_good[:, None]).sum(axis=-1) / (n * n)


def stratum_weights(rng: np.random.Generator, reps: int, n_boot: int, n: int) -> np.ndarray:
    """Multiplicities ``[R, B, n]`` of n images drawn with replacement from n (one stratum)."""
    idx = rng.integers(0, n, size=(reps * n_boot, n))
    return resample_weights(idx).reshape(reps, n_boot, n)


def simulate_coverage(
    n_seeds: int, tau: float, n: int, reps: int = 1000, n_boot: int = 200, seed: int = 0,
    mu_a: float = 1.2, mu_b: float = 0.8, rho: float = 0.7, level: float = 0.95, chunk: int = 100,
) -> dict[str, float]:  # fmt: skip
    """Measured coverage of each of ``INTERVALS`` over ``reps`` simulated replications, plus the mean
    ``se_seed`` and ``se_image`` of the combined interval (their scale: AUROC, not points)."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0.0, 1.0], n)
    delta = true_difference(tau, mu_a, mu_b)
    hits = dict.fromkeys(INTERVALS, 0)
    se_parts = np.zeros(2)
    for start in range(0, reps, chunk):
        r = min(chunk, reps - start)
        z = rng.normal(size=(r, 1, 2 * n))  # the images' difficulty, shared by methods and seeds
        shift_a = mu_a + rng.normal(0.0, tau, size=(r, n_seeds, 1))  # mu_A + u_s
        noise = math.sqrt(1.0 - rho**2)
        # score = shift y_i + rho z_i + sqrt(1 - rho^2) e_i
        a = shift_a * y + rho * z + noise * rng.normal(size=(r, n_seeds, 2 * n))
        b = mu_b * y + rho * z + noise * rng.normal(size=(r, 1, 2 * n))
        w_good, w_anom = stratum_weights(rng, r, n_boot, n), stratum_weights(rng, r, n_boot, n)
        ones = np.ones((r, 1, n), dtype=np.int64)
        values = bootstrap_aurocs(a, n, ones, ones)[..., 0] - bootstrap_aurocs(b, n, ones, ones)[..., 0]
        samples = bootstrap_aurocs(a, n, w_good, w_anom) - bootstrap_aurocs(b, n, w_good, w_anom)
        for v, smp in zip(values, samples):  # one replication: v [S], smp [S, B]
            t_ci = seed_image_interval(v, smp, level, satterthwaite=True)
            z_ci = seed_image_interval(v, smp, level)
            seeds = aggregate_seeds(v, level)
            images = percentile_interval(smp.mean(axis=0), level)
            bounds = [(t_ci["low"], t_ci["high"]), (z_ci["low"], z_ci["high"]), images]
            bounds.append((seeds["low"], seeds["high"]))
            for name, (lo, hi) in zip(INTERVALS, bounds):
                hits[name] += int(lo <= delta <= hi)
            se_parts += (t_ci["se_seed"], t_ci["se_image"])
    out = {k: v / reps for k, v in hits.items()}
    out["se_seed"], out["se_image"] = se_parts / reps
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=1000, help="replications per setting (default 1000)")
    ap.add_argument("--boot", type=int, default=200, help="bootstrap resamples per replication (default 200)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    sd = math.sqrt(0.95 * 0.05 / args.reps)
    print(f"95 % intervals of a paired AUROC difference, {args.reps} replications per row, {args.boot} "
          f"resamples (the coverage's own sd at 0.95: {sd:.3f}); se in AUROC points")  # fmt: skip
    print("\n| S seeds | tau | images per type | se seeds | se images | " + " | ".join(INTERVALS) + " |")
    print("|" + "---:|" * (5 + len(INTERVALS)))
    for s, tau, n in SETTINGS:
        r = simulate_coverage(s, tau, n, args.reps, args.boot)
        cells = [f"{r[k]:.3f}" for k in INTERVALS]
        print(f"| {s} | {tau:g} | {n} | {100 * r['se_seed']:.1f} | {100 * r['se_image']:.1f} | "
              + " | ".join(cells) + " |", flush=True)  # fmt: skip
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

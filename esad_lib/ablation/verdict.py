"""Whether a measured difference supports a paper claim, decided from the 95 % CI ``[low, high]`` of
``Δ = metric(variant) − metric(esad)`` (:func:`esad_lib.ablation.compare_to_base`), never from its
point estimate.  The claims are the paper's (the authors' README: method summary and results table),
registered with each variant.  Four verdicts, with δ = :data:`SIMILAR_TOLERANCE` (the equivalence
margin):

``"lower"`` (the part helps): *supports* when ``high < 0``, *contradicts* when ``low > 0``,
*equivalent* when ``[low, high]`` lies inside ``±δ`` (any effect of the part is smaller than δ);
``"similar"`` (``|Δ| <= δ``): *supports* when ``[low, high]`` lies inside ``±δ``, *contradicts* when
wholly outside it on one side; otherwise (and without an interval) *not enough evidence*, stated with
the minimum detectable effect of that interval (:func:`minimum_detectable_effect`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from statistics import NormalDist

SUPPORTS, CONTRADICTS, NOT_ENOUGH, NO_CLAIM = "supports", "contradicts", "not enough evidence", "no claim"
EQUIVALENT = "equivalent"
#: the four verdicts of a checkable claim, in the order the summaries count them.
VERDICTS: tuple[str, ...] = (SUPPORTS, CONTRADICTS, EQUIVALENT, NOT_ENOUGH)
EXPECTATIONS: tuple[str, ...] = ("lower", "similar")
#: [ours] δ, the equivalence margin in metric units (0.03 = three AUROC points): the paper gives no
#: margin for "comparable accuracy"; 3 points is about half the gap between ESAD and RIAD in its
#: table (89.3 vs 84.0), so a part whose effect stays inside ±δ does not carry the headline.
SIMILAR_TOLERANCE = 0.03
#: power at which :func:`minimum_detectable_effect` is stated.
MDE_POWER = 0.8


def minimum_detectable_effect(low: float, high: float, level: float = 0.95, power: float = MDE_POWER
                              ) -> float:
    """The smallest true |Δ| that an interval as wide as ``[low, high]`` detects (excludes 0) with
    probability ``power``, in the units of the bounds (normal approximation)."""
    z = NormalDist().inv_cdf(0.5 + level / 2)
    # se = (high - low) / (2 z_{1-α/2});  MDE = (z_{1-α/2} + z_power) * se
    return (z + NormalDist().inv_cdf(power)) * (high - low) / (2 * z)


def _check(expected: str | None, low: float, high: float, tolerance: float) -> None:
    if expected is not None and expected not in EXPECTATIONS:
        raise ValueError(f"expected must be one of {EXPECTATIONS} or None, got {expected!r}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if low > high:  # False when a bound is NaN
        raise ValueError(f"the interval's low bound {low} is above its high bound {high}")


def _judge(expected: str | None, low: float, high: float, tolerance: float, scale: float) -> tuple[str, str]:
    """(verdict, the phrase naming the rule of the module docstring that decided it; bounds x ``scale``)."""
    _check(expected, low, high, tolerance)
    if expected is None:
        return NO_CLAIM, "the paper makes no claim to check"
    if math.isnan(low) or math.isnan(high):
        return NOT_ENOUGH, "no interval (one seed, no per-image scores)"
    band = f"±{scale * tolerance:.1f} band"
    inside = -tolerance <= low and high <= tolerance
    mde = f"minimum detectable effect {scale * minimum_detectable_effect(low, high):.1f}"
    if expected == "lower":
        if high < 0:
            return SUPPORTS, "CI below 0"
        if low > 0:
            return CONTRADICTS, "CI above 0: the variant scores higher"
        if inside:
            return EQUIVALENT, f"CI inside the {band}"
        return NOT_ENOUGH, f"CI includes 0 and leaves the {band}; {mde}"
    if inside:
        return SUPPORTS, f"CI inside the {band}"
    if low > tolerance or high < -tolerance:
        return CONTRADICTS, f"CI outside the {band} ({'higher' if low > tolerance else 'lower'})"
    edge = "wider than" if high - low > 2 * tolerance else "crosses an edge of"
    return NOT_ENOUGH, f"CI {edge} the {band}; {mde}"


def claim_verdict(expected: str | None, low: float, high: float, tolerance: float = SIMILAR_TOLERANCE) -> str:
    """The verdict of the CI ``[low, high]`` of ``Δ = variant − esad`` for the claim ``expected``."""
    return _judge(expected, float(low), float(high), tolerance, 100.0)[0]


def verdict_reason(
    expected: str | None, low: float, high: float, tolerance: float = SIMILAR_TOLERANCE, scale: float = 100.0
) -> str:
    """One phrase saying which rule decided :func:`claim_verdict` (bounds × ``scale``: points)."""
    return _judge(expected, float(low), float(high), tolerance, scale)[1]


def count_verdicts(verdicts: Iterable[str]) -> dict[str, int]:
    """``{verdict: count}`` over :data:`VERDICTS` (every key present; NO_CLAIM not counted)."""
    vs = list(verdicts)
    if unknown := sorted({v for v in vs if v not in VERDICTS and v != NO_CLAIM}):
        raise ValueError(f"unknown verdict(s) {unknown}; expected {VERDICTS} or {NO_CLAIM!r}")
    return {v: vs.count(v) for v in VERDICTS}


def grid_description(categories: Sequence[str], seeds: Sequence[int]) -> str:
    """``"2 categories (breakfast_box, juice_bottle) x 2 seeds (0, 1)"``."""
    cats, sds = sorted(set(categories)), sorted({int(s) for s in seeds})
    c = f"{len(cats)} categor{'y' if len(cats) == 1 else 'ies'} ({', '.join(cats)})"
    s = f"{len(sds)} seed{'' if len(sds) == 1 else 's'} ({', '.join(map(str, sds))})"
    return f"{c} x {s}"


def verdict_sentence(verdicts: Iterable[str], metric: str, categories: Sequence[str], seeds: Sequence[int],
                     profile: str) -> str:
    """The summary sentence of a claims table: each verdict counted, the grid named."""
    n = count_verdicts(verdicts)
    total = sum(n.values())
    return (
        f"{metric}, {profile} profile, {grid_description(categories, seeds)}: of {total} checkable "
        f"claim{'' if total == 1 else 's'}, {n[SUPPORTS]} supported, {n[CONTRADICTS]} contradicted, "
        f"{n[EQUIVALENT]} equivalent within ±{100 * SIMILAR_TOLERANCE:.0f} points, "
        f"{n[NOT_ENOUGH]} not enough evidence (95 % CIs of the difference to esad)."
    )

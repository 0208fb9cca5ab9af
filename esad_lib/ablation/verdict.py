"""Whether a measured difference supports a paper claim: *supports*, *contradicts* or *not enough
evidence*, decided from the 95 % CI ``[low, high]`` of ``Δ = metric(variant) − metric(esad)``
(:func:`esad_lib.ablation.compare_to_base`), never from its point estimate.  The claims are the
paper's (the authors' README: method summary and results table), registered with each variant.

``"lower"`` (the part helps): supports when ``high < 0``, contradicts when ``low > 0``;
``"similar"`` (``|Δ| <= tol``): supports when ``[low, high]`` lies inside ``±tol``, contradicts when
wholly outside it on one side; else (and without an interval) not enough evidence.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

SUPPORTS, CONTRADICTS, NOT_ENOUGH, NO_CLAIM = "supports", "contradicts", "not enough evidence", "no claim"
#: the three verdicts of a checkable claim, in the order the summaries count them.
VERDICTS: tuple[str, ...] = (SUPPORTS, CONTRADICTS, NOT_ENOUGH)
EXPECTATIONS: tuple[str, ...] = ("lower", "similar")
#: [ours] half-width of the "similar" band, in metric units (0.01 = one AUROC point): the paper
#: gives no margin for "comparable accuracy"; one point is the smallest gap its table separates
#: methods by on a category (juice bottle: ESAD 97.8 vs RIAD 96.8).
SIMILAR_TOLERANCE = 0.01


def _check(expected: str | None, low: float, high: float, tolerance: float) -> None:
    if expected is not None and expected not in EXPECTATIONS:
        raise ValueError(f"expected must be one of {EXPECTATIONS} or None, got {expected!r}")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if not (math.isnan(low) or math.isnan(high)) and low > high:
        raise ValueError(f"the interval's low bound {low} is above its high bound {high}")


def _judge(expected: str | None, low: float, high: float, tolerance: float, scale: float) -> tuple[str, str]:
    """(verdict, the phrase naming the rule of the module docstring that decided it; bounds x ``scale``)."""
    _check(expected, low, high, tolerance)
    if expected is None:
        return NO_CLAIM, "the paper makes no claim to check"
    if math.isnan(low) or math.isnan(high):
        return NOT_ENOUGH, "no interval (one seed, no per-image scores)"
    if expected == "lower":
        if high < 0:
            return SUPPORTS, "CI below 0"
        if low > 0:
            return CONTRADICTS, "CI above 0: the variant scores higher"
        return NOT_ENOUGH, "CI includes 0"
    band = f"±{scale * tolerance:.1f} band"
    if -tolerance <= low and high <= tolerance:
        return SUPPORTS, f"CI inside the {band}"
    if low > tolerance or high < -tolerance:
        return CONTRADICTS, f"CI outside the {band} ({'higher' if low > tolerance else 'lower'})"
    return NOT_ENOUGH, f"CI {'wider than' if high - low > 2 * tolerance else 'crosses an edge of'} the {band}"


def claim_verdict(expected: str | None, low: float, high: float, tolerance: float = SIMILAR_TOLERANCE) -> str:
    """The verdict of the CI ``[low, high]`` of ``Δ = variant − esad`` for the claim ``expected``
    (the rules of the module docstring)."""
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
    return {v: sum(1 for x in vs if x == v) for v in VERDICTS}


def grid_description(categories: Sequence[str], seeds: Sequence[int]) -> str:
    """``"2 categories (breakfast_box, juice_bottle) x 2 seeds (0, 1)"``."""
    cats, sds = sorted(set(categories)), sorted({int(s) for s in seeds})
    c = f"{len(cats)} categor{'y' if len(cats) == 1 else 'ies'} ({', '.join(cats)})"
    s = f"{len(sds)} seed{'' if len(sds) == 1 else 's'} ({', '.join(map(str, sds))})"
    return f"{c} x {s}"


def verdict_sentence(
    verdicts: Iterable[str], metric: str, categories: Sequence[str], seeds: Sequence[int], profile: str
) -> str:
    """The summary sentence of a claims table: each verdict counted, the grid named."""
    n = count_verdicts(verdicts)
    total = sum(n.values())
    return (
        f"{metric}, {profile} profile, {grid_description(categories, seeds)}: of {total} checkable "
        f"claim{'' if total == 1 else 's'}, {n[SUPPORTS]} supported, {n[CONTRADICTS]} contradicted, "
        f"{n[NOT_ENOUGH]} not enough evidence (95 % CIs of the difference to esad)."
    )

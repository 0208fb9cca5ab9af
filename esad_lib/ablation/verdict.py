"""Whether a measured difference supports a paper claim: *supports*, *contradicts* or *not enough
evidence*, decided from the 95 % confidence interval of the difference, never from its point estimate.

The claims are those of the paper (the authors' README: method summary and results table) as
registered with each variant (:class:`~esad_lib.ablation.variants.Variant`, ``expect``).  The
measured quantity is ``Δ = metric(variant) − metric(esad)`` with its interval ``[low, high]``
(:func:`esad_lib.ablation.compare_to_base`: paired over the same test images and seeds).

The rules (``tol`` = :data:`SIMILAR_TOLERANCE` unless given):

* ``expected = "lower"`` (the part helps: removing it should cost accuracy)

  - *supports*: ``high < 0``, the whole CI below 0;
  - *contradicts*: ``low > 0``, the whole CI above 0 (the variant beats esad);
  - *not enough evidence*: ``low <= 0 <= high``, the CI includes 0.

* ``expected = "similar"`` (the choice costs no accuracy: ``|Δ| <= tol``)

  - *supports*: ``-tol <= low`` and ``high <= tol``, the whole CI inside the band;
  - *contradicts*: ``low > tol`` or ``high < -tol``, the whole CI outside the band, on one side;
  - *not enough evidence*: every other case: the CI straddles an edge of the band, or it is
    wider than the band (``high - low > 2 tol``: it can never lie inside it).

No interval (NaN bounds: one seed and no per-image scores) is *not enough evidence*: a point
estimate alone decides nothing.  A variant without a claim (``expect=None``) gets
:data:`NO_CLAIM`.  "similar" is an equivalence statement, so it needs a CI *narrower* than the
band to be supported; a CI that merely includes 0 does not support it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

SUPPORTS = "supports"
CONTRADICTS = "contradicts"
NOT_ENOUGH = "not enough evidence"
NO_CLAIM = "no claim"
#: the three verdicts of a checkable claim, in the order the summaries count them.
VERDICTS: tuple[str, ...] = (SUPPORTS, CONTRADICTS, NOT_ENOUGH)
#: the directions a claim can imply for ``variant − esad``.
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


def claim_verdict(expected: str | None, low: float, high: float, tolerance: float = SIMILAR_TOLERANCE) -> str:
    """:data:`SUPPORTS`, :data:`CONTRADICTS`, :data:`NOT_ENOUGH` or :data:`NO_CLAIM` for the CI
    ``[low, high]`` of ``Δ = variant − esad`` against the claim's direction ``expected``
    (the rules of the module docstring)."""
    low, high = float(low), float(high)
    _check(expected, low, high, tolerance)
    if expected is None:
        return NO_CLAIM
    if math.isnan(low) or math.isnan(high):
        return NOT_ENOUGH
    if expected == "lower":
        return SUPPORTS if high < 0 else CONTRADICTS if low > 0 else NOT_ENOUGH
    if -tolerance <= low and high <= tolerance:
        return SUPPORTS
    return CONTRADICTS if (low > tolerance or high < -tolerance) else NOT_ENOUGH


def verdict_reason(
    expected: str | None, low: float, high: float, tolerance: float = SIMILAR_TOLERANCE, scale: float = 100.0
) -> str:
    """One phrase saying which rule decided :func:`claim_verdict` (bounds × ``scale``: points)."""
    low, high = float(low), float(high)
    verdict = claim_verdict(expected, low, high, tolerance)
    if verdict == NO_CLAIM:
        return "the paper makes no claim to check"
    if math.isnan(low) or math.isnan(high):
        return "no interval (one seed, no per-image scores)"
    band = f"±{scale * tolerance:.1f}"
    if expected == "lower":
        return {
            SUPPORTS: "CI below 0",
            CONTRADICTS: "CI above 0: the variant scores higher",
        }.get(verdict, "CI includes 0")
    if verdict == SUPPORTS:
        return f"CI inside the {band} band"
    if verdict == CONTRADICTS:
        return f"CI outside the {band} band ({'higher' if low > tolerance else 'lower'})"
    if high - low > 2 * tolerance:
        return f"CI wider than the {band} band"
    return f"CI crosses an edge of the {band} band"


def count_verdicts(verdicts: Iterable[str]) -> dict[str, int]:
    """``{verdict: count}`` over :data:`VERDICTS` (every key present; NO_CLAIM not counted)."""
    vs = list(verdicts)
    unknown = sorted({v for v in vs if v not in VERDICTS and v != NO_CLAIM})
    if unknown:
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
    """The summary sentence of a claims table: each verdict counted, the grid named.

    ``"image_auroc.structural, demo profile, 2 categories (a, b) x 2 seeds (0, 1): of 6 checkable
    claims, 1 supported, 2 contradicted, 3 not enough evidence (95 % CIs of the difference to esad)."``
    """
    n = count_verdicts(verdicts)
    total = sum(n.values())
    return (
        f"{metric}, {profile} profile, {grid_description(categories, seeds)}: of {total} checkable "
        f"claim{'' if total == 1 else 's'}, {n[SUPPORTS]} supported, {n[CONTRADICTS]} contradicted, "
        f"{n[NOT_ENOUGH]} not enough evidence (95 % CIs of the difference to esad)."
    )

"""The per-category results table in the paper's format (the authors' README "5. result": the table of
image-level AUROC on MVTec LOCO AD), our measured numbers (``metrics.json``) beside the paper's
REPORTED ones; comparable only for real MVTec LOCO AD at the paper profile, so the table says on
which data and at which profile ours were measured.  Also the paired-difference table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from esad_lib.config import CATEGORIES

#: Image-level AUROC (%) on the STRUCTURAL anomalies of MVTec LOCO AD as REPORTED by the ESAD paper
#: (Fei & Wu, The Visual Computer; the authors' README, "5. result"), not our measurements: the five
#: categories (CATEGORIES order), then the paper's own "Average str" row (ESAD 89.3; the mean of its
#: rows is 89.28).  The paper gives no per-category logical AUROC or AU-sPRO.
_COLUMNS = (*CATEGORIES, "average")
REPORTED: dict[str, dict[str, float | None]] = {
    "ESAD": dict(zip(_COLUMNS, (75.9, 97.8, 96.6, 87.6, 88.5, 89.3))),
    "RIAD": dict(zip(_COLUMNS, (60.4, 96.8, 86.2, 81.8, 94.6, 84.0))),
    "GCAD": dict(zip(_COLUMNS, (80.9, 98.9, 74.9, 70.5, 78.3, 80.7))),
    "ComAD": dict(zip(_COLUMNS, (70.0, 80.5, 93.8, 65.0, 63.8, 74.6))),
    "DADF": dict(zip(_COLUMNS, (None, None, None, None, None, 88.2))),
}
REPORTED_SOURCE = (
    "ESAD paper (Fei & Wu, The Visual Computer), table of image-level AUROC on MVTec LOCO AD "
    "structural anomalies, as given in the authors' README"
)

CATEGORY_TITLES = {c: c.replace("_", " ").capitalize() for c in CATEGORIES}


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100.0 * x:.1f}"


def _rep(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _get(m: Any, *keys: str) -> Any:
    for k in keys:
        m = m.get(k) if isinstance(m, Mapping) else None
    return m


def _cell(m: Mapping[str, Any] | None, metric: str, kind: str) -> tuple[str, float | None, float | None]:
    """``"76.9 [72.1, 81.4]"`` (or just the value without an interval), the value and its se."""
    v, c = _get(m, metric, kind), _get(m, "ci", metric, kind)  # c: the bootstrap interval, if any
    if v is None:
        return "-", None, None
    v = float(v)
    if not isinstance(c, Mapping) or c.get("low") is None:
        return _pct(v), v, None
    return f"{_pct(v)} [{_pct(c['low'])}, {_pct(c['high'])}]", v, c.get("se")


def format_metric(m: Mapping[str, Any] | None, metric: str, kind: str) -> str:
    """``"76.9 [72.1, 81.4]"``: a metrics.json value (%) with its bootstrap interval from ``m["ci"]``
    (``metric``: "image_auroc" or "au_spro"; ``kind``: "structural", "logical" or "mean")."""
    return _cell(m, metric, kind)[0]


def mean_with_ci(values: list[float | None], ses: list[float | None]) -> str:
    """The mean over categories and, when every category has a standard error, its 95 % interval
    ``mean +- 1.96 sqrt(sum se_c^2) / n`` (independent test sets, normal approximation)."""
    pairs = [(v, se) for v, se in zip(values, ses) if v is not None and not math.isnan(v)]
    if not pairs:
        return "-"
    n = len(pairs)
    mean = sum(v for v, _ in pairs) / n
    if any(se is None or math.isnan(se) for _, se in pairs):
        return _pct(mean)
    half = 1.96 * math.sqrt(sum(se**2 for _, se in pairs)) / n
    return f"{_pct(mean)} [{_pct(max(0.0, mean - half))}, {_pct(min(1.0, mean + half))}]"


def _by_category(metrics: Mapping[str, Mapping] | Iterable[Mapping]) -> dict[str, Mapping]:
    if isinstance(metrics, Mapping):
        return dict(metrics)
    out: dict[str, Mapping] = {}
    for m in metrics:
        if (cat := m.get("category")) is None:
            raise ValueError("a metrics dict without 'category'; pass {category: metrics} instead")
        if cat in out:
            raise ValueError(f"two metrics for category {cat!r}; report one run per category")
        out[cat] = m
    return out


def describe_setting(metrics: Mapping[str, Mapping]) -> str:
    """One line: on which data, at which profile/resolution/budget our numbers were measured."""
    parts = set()
    for m in metrics.values():
        if "maps_dir" in m:  # esad score-maps: maps of any method, read from disk
            parts.add(f"maps read from {m['maps_dir']} (dataset {m.get('dataset_root', '?')})")
            continue
        ds, cfg = m.get("dataset", "?"), m.get("config") or {}
        data = "the built-in SYNTHETIC LOCO-like benchmark" if ds == "synthetic" else f"real data at {ds}"
        size = m.get("image_size") or cfg.get("image_size")
        size_s = f"{size[0]}x{size[1]}" if size else "?"
        method = m.get("method", "esad")
        kind = str(m.get("score_map") or method)
        norm = m.get("map_normalization") or cfg.get("map_normalization")
        if method == "patchcore":  # training-free: a memory bank of train/good features
            extractor = m.get("feature_extractor", "?")
            how = f"nearest-neighbour maps on frozen `{extractor}` features, no training"
        elif method not in ("esad", "riad"):  # the naive baseline, a reader's detector: not trained
            how = f"{kind} maps, no training"
        else:
            std = f", standardised with {norm}/good statistics" if norm in ("train", "validation") else ""
            how = f"{cfg.get('epochs', '?')} epochs, {kind}-level maps{std}"
        parts.add(f"{data}, profile `{m.get('profile', '?')}` ({size_s} px, {how})")
    return "; ".join(sorted(parts)) if parts else "no runs"


def format_report(metrics_by_category: Mapping[str, Mapping] | Iterable[Mapping],
                  extra: Mapping[str, Mapping[str, Mapping] | Iterable[Mapping]] | None = None,
                  title: str = "Results per category (%)", reported_label: str = "reported") -> str:
    """Markdown table: ours (structural/logical image AUROC %, AU-sPRO %) beside the paper's REPORTED ESAD
    and RIAD columns (headed ``"ESAD str. (<reported_label>)"``).  ``metrics_by_category``: ``{category:
    metrics.json dict}`` or a list of them; ``extra``: more of OUR columns (``{"RIAD (ours)": {...}}``),
    each as structural / logical image AUROC."""
    ours = _by_category(metrics_by_category)
    extras = {label: _by_category(m) for label, m in (extra or {}).items()}
    categories = list(CATEGORIES) + sorted(set(ours) - set(CATEGORIES))
    header = ["Category", "Ours str.", "Ours log.", "Ours AU-sPRO str.", "Ours AU-sPRO log."]
    header += [f"{label} {k}." for label in extras for k in ("str", "log")]
    header += [f"ESAD str. ({reported_label})", f"RIAD str. ({reported_label})"]
    kinds, rows, cells = ("structural", "logical"), [], []  # cells[row]: (text, value, se) of our columns
    for cat in categories:
        c = [_cell(ours.get(cat), metric, kind) for metric in ("image_auroc", "au_spro") for kind in kinds]
        c += [_cell(e.get(cat), "image_auroc", kind) for e in extras.values() for kind in kinds]
        rep = [_rep(REPORTED[k].get(cat)) for k in ("ESAD", "RIAD")]
        rows.append([CATEGORY_TITLES.get(cat, cat)] + [t for t, _, _ in c] + rep)
        cells.append(c)
    n_ours = sum(1 for c in categories if c in ours)
    avg_label = "Average" if n_ours == len(CATEGORIES) else f"Average ({n_ours} of {len(CATEGORIES)} ours)"
    means = [mean_with_ci([v for _, v, _ in col], [se for _, _, se in col]) for col in zip(*cells)]
    rows.append([avg_label] + means + [_rep(REPORTED[k]["average"]) for k in ("ESAD", "RIAD")])

    lines = [f"### {title}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows] + [
        "", f"- **Ours**: measured on {describe_setting(ours)}. str. = good vs structural test images, "
        "log. = good vs logical; AU-sPRO up to FPR 0.05 (each type's images plus the good ones).",
        "- [a, b] = 95 % confidence interval, stratified bootstrap over the test images (2000 resamples); "
        "the average's interval combines the categories' standard errors (independent test sets, normal "
        "approximation).",
    ] + [f"- **{label}**: measured on {describe_setting(e)}." for label, e in extras.items()] + [
        f"- **Reported** columns are NOT our measurements: {REPORTED_SOURCE}; real MVTec LOCO AD, "
        "256x256, full training. The paper reports no logical AUROC or AU-sPRO.",
        "- Ours and reported are comparable only for real MVTec LOCO AD at the `paper` profile; on "
        "the synthetic benchmark or a smaller profile they differ in data, resolution and budget.",
    ]
    return "\n".join(lines) + "\n"


#: ``diffs[other][category]`` and ``means[other]``: ``esad_lib.uncertainty`` paired difference dicts.
_Diffs = Mapping[str, Mapping[str, Mapping[str, Any] | None]]
_Means = Mapping[str, Mapping[str, Any] | None]
PAIRED_NOTE = (
    "- Paired: both methods are scored on the SAME test images and every bootstrap resample is "
    "applied to both, so image difficulty cancels out. `*` = the 95 % interval excludes 0. The "
    "mean's interval averages the categories' paired resamples (independent test sets)."
)


def format_paired(diffs: _Diffs, means: _Means, base: str = "ESAD", metric: str = "structural image AUROC",
                  note: str = PAIRED_NOTE) -> str:
    """Markdown table of paired differences ``base - other`` per category and their mean
    (``diffs[other][category]``, ``means[other]``: ``esad_lib.uncertainty`` difference dicts);
    ``*`` marks an interval that excludes 0; ``note``: the bullet saying how the intervals are made."""
    others = list(diffs)
    cats = [c for c in CATEGORIES if any(c in diffs[o] for o in others)]
    lines = [f"### Paired differences, {base} minus each method ({metric}, points)", "",
             "| Category | " + " | ".join(f"{base} − {o}" for o in others) + " |",
             "|---|" + "---:|" * len(others)]

    def cell(d: Mapping[str, Any] | None) -> str:
        return _diff_text(d) + (" *" if d.get("excludes_zero") else "") if d else "-"

    for c in cats:
        row = " | ".join(cell(diffs[o].get(c)) for o in others)
        lines.append(f"| {CATEGORY_TITLES.get(c, c)} | {row} |")
    lines.append("| **Mean** | " + " | ".join(cell(means.get(o)) for o in others) + " |")
    better = {o: "better" if d["diff"] > 0 else "worse" for o, d in means.items() if d}
    verdicts = [f"{base} is {better[o]} than {o} on the mean (interval excludes 0)" if d["excludes_zero"]
                else f"{base} vs {o}: not enough evidence (the interval includes 0)"
                for o in others if (d := means.get(o))]
    lines += ["", note] + [f"- {v}." for v in verdicts]
    return "\n".join(lines) + "\n"


def _diff_text(d: Mapping[str, Any]) -> str:
    return f"{100 * d['diff']:+.1f} [{100 * d['low']:.1f}, {100 * d['high']:.1f}]"


def _direction(d: Mapping[str, Any]) -> str:
    """``base - other``'s paired interval above 0: "ahead", below: "behind", else "no clear difference"."""
    return ("ahead" if d["diff"] > 0 else "behind") if d.get("excludes_zero") else "no clear difference"


def win_loss_summary(diffs: _Diffs, means: _Means, base: str = "ESAD") -> list[str]:
    """One line per other method: the categories where ``base`` is ahead / behind (the paired 95 %
    interval of ``base - other`` above / below 0) or not, then the mean difference and its verdict."""
    lines = []
    for other, by_cat in diffs.items():
        groups: dict[str, list[str]] = {"ahead": [], "behind": [], "no clear difference": []}
        for cat in [c for c in CATEGORIES if c in by_cat] + sorted(set(by_cat) - set(CATEGORIES)):
            if d := by_cat[cat]:
                groups[_direction(d)].append(CATEGORY_TITLES.get(cat, cat).lower())
        parts = [f"{k} on {', '.join(v) if v else 'none'}" for k, v in groups.items()]
        if m := means.get(other):
            parts.append(f"mean {_diff_text(m)} points ({_direction(m)})")
        lines.append(f"{base} vs {other}: " + "; ".join(parts))
    return lines


def summary_line(m: dict) -> str:
    """One line per evaluated run: AUROCs, AU-PRO, AU-sPRO, scoring speed."""
    p = lambda x: "-" if x is None else f"{100 * x:.1f}"
    ia, sp = m["image_auroc"], m["au_spro"]
    timing = m.get("timing")
    return (f"{m['category']} ({m['method']}): image AUROC str {p(ia['structural'])} log {p(ia['logical'])} "
            f"mean {p(ia['mean'])} | pixel AUROC {p(m['pixel_auroc'])} | AU-PRO {p(m['au_pro'])} | "
            f"AU-sPRO str {p(sp['structural'])} log {p(sp['logical'])}"
            + (f" | scoring {timing['scoring_ms_per_image']:.1f} ms/image" if timing else ""))

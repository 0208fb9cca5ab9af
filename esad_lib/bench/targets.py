"""The issue's targets (issue 7), each with the measured figure: reported, never asserted."""

from __future__ import annotations

from typing import Any

from esad_lib.bench.settings import (
    TARGET_MASK_SPEEDUP,
    TARGET_PARAM_FRACTION,
    TARGET_SCORING_SPEEDUP,
    TARGET_SPRO_PEAK_GIB,
    TARGET_SPRO_SECONDS,
    TOL_METRIC,
)


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured figure (reported, not asserted)."""
    quick = res["meta"]["quick"]
    where = "(quick mode: not the target's setting)" if quick else ""
    out = []
    mo = res.get("models")
    if mo:
        s1 = mo["scoring"]["1"]
        sp = s1["esad/fast"]["images_per_s"] / s1["riad/fast"]["images_per_s"]
        frac = mo["count"]["esad"]["parameters"] / mo["count"]["riad"]["parameters"]
        note = ""
        if "esad/onnxruntime" in s1 and "riad/onnxruntime" in s1:
            best = {
                m: max(v["images_per_s"] for k, v in s1.items() if k.startswith(f"{m}/"))
                for m in ("esad", "riad")
            }
            sp2 = s1["esad/onnxruntime"]["images_per_s"] / s1["riad/onnxruntime"]["images_per_s"]
            note = (
                f" (both networks in ONNX Runtime: {sp2:.2f}x; "
                f"fastest path of each: {best['esad'] / best['riad']:.2f}x)"
            )
        out.append(
            {
                "target": f"ESAD full scoring >= {TARGET_SCORING_SPEEDUP}x RIAD images/s (CPU, batch 1)",
                "measured": f"{sp:.2f}x{note}",
                "met": sp >= TARGET_SCORING_SPEEDUP,
            }
        )
        out.append(
            {
                "target": f"ESAD parameters < {TARGET_PARAM_FRACTION} of RIAD's",
                "measured": f"{frac:.3f}",
                "met": frac < TARGET_PARAM_FRACTION,
            }
        )
    ma = res.get("masks")
    if ma:
        r = next(x for x in ma if x["model"] == "esad" and x["variant"].startswith("batched"))
        out.append(
            {
                "target": f"ESAD: batched masks >= {TARGET_MASK_SPEEDUP}x faster than the loop",
                "measured": f"{r['speedup_vs_loop']:.2f}x",
                "met": r["speedup_vs_loop"] >= TARGET_MASK_SPEEDUP,
            }
        )
    me = res.get("metrics")
    if me:
        f = me["full"]["au_spro"]
        mem = f["memory"].get("peak_mib")
        shape = f"{me['inputs']['n']}x{me['inputs']['size'][0]}x{me['inputs']['size'][1]}"
        out.append(
            {
                "target": f"AU-sPRO on {shape} < {TARGET_SPRO_SECONDS:.0f} s",
                "measured": f"{f['median_s']:.2f} s",
                "met": f["median_s"] < TARGET_SPRO_SECONDS,
            }
        )
        out.append(
            {
                "target": f"AU-sPRO peak memory < {TARGET_SPRO_PEAK_GIB:.0f} GiB",
                "measured": f"{mem / 1024:.2f} GiB" if mem is not None else f["memory"].get("status", "?"),
                "met": mem is not None and mem / 1024 < TARGET_SPRO_PEAK_GIB,
            }
        )
        d = me["subset"]["diff"]["au_spro"]
        out.append(
            {
                "target": f"AU-sPRO == reference within {TOL_METRIC:g}",
                "measured": f"|diff| = {d:.1e}",
                "met": d <= TOL_METRIC,
            }
        )
    for t in out:
        t["note"] = where
    return out

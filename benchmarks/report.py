"""The results as markdown tables (what ``benchmarks/bench.py`` prints and writes to
``results.md``), the design targets with the measured figures (reported, never asserted), and
the writer of ``results.json`` / ``results.md``."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.scoring_rows import OURS_FAST, OURS_PLAIN, THEIRS
from benchmarks.workloads import TOL_METRIC
from esad_lib.paths import atomic_write_text

#: the design targets (reported, not asserted): ESAD's scoring speed and size against RIAD's,
#: the batched masks against masks one at a time, and the metrics at MVTec LOCO scale.
TARGET_SCORING_SPEEDUP = 1.5
TARGET_PARAM_FRACTION = 0.25
TARGET_MASK_SPEEDUP = 1.3
TARGET_SPRO_SECONDS = 30.0
TARGET_SPRO_PEAK_GIB = 4.0


def _target(text: str, measured: str, met: bool) -> dict[str, Any]:
    return {"target": text, "measured": measured, "met": bool(met)}


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The design targets, each with the measured figure (reported, not asserted)."""
    out = []
    mo = res.get("models")
    if mo:
        s1 = mo["scoring"]["1"]
        sp = s1["esad/fast"]["images_per_s"] / s1["riad/fast"]["images_per_s"]
        frac = mo["count"]["esad"]["parameters"] / mo["count"]["riad"]["parameters"]
        text = f"ESAD full scoring >= {TARGET_SCORING_SPEEDUP}x RIAD images/s (CPU, batch 1)"
        out.append(_target(text, f"{sp:.2f}x", sp >= TARGET_SCORING_SPEEDUP))
        text = f"ESAD parameters < {TARGET_PARAM_FRACTION} of RIAD's"
        out.append(_target(text, f"{frac:.3f}", frac < TARGET_PARAM_FRACTION))
    au = res.get("authors")
    if au:
        t = au["timing"]["1"]
        sp = t[THEIRS]["median_s"] / t[OURS_PLAIN]["median_s"]
        text = f"ESAD: batched masks (fast_scoring off) >= {TARGET_MASK_SPEEDUP}x faster than one at a time"
        out.append(_target(text, f"{sp:.2f}x", sp >= TARGET_MASK_SPEEDUP))
    me = res.get("metrics")
    if me:
        f = me["full"]["au_spro"]
        mem = f["memory"].get("peak_mib")
        shape = f"{me['inputs']['n']}x{me['inputs']['size'][0]}x{me['inputs']['size'][1]}"
        text = f"AU-sPRO on {shape} < {TARGET_SPRO_SECONDS:.0f} s"
        out.append(_target(text, f"{f['median_s']:.2f} s", f["median_s"] < TARGET_SPRO_SECONDS))
        measured = f"{mem / 1024:.2f} GiB" if mem is not None else f["memory"].get("status", "?")
        met = mem is not None and mem / 1024 < TARGET_SPRO_PEAK_GIB
        out.append(_target(f"AU-sPRO peak memory < {TARGET_SPRO_PEAK_GIB:.0f} GiB", measured, met))
        d = me["subset"]["diff"]["au_spro"]
        text = f"AU-sPRO == reference within {TOL_METRIC:g}"
        out.append(_target(text, f"|diff| = {d:.1e}", d <= TOL_METRIC))
    note = "(quick mode: not the target's setting)" if res["meta"]["quick"] else ""
    for t in out:
        t["note"] = note
    return out


def _ratio_mem(e: dict, r: dict) -> str:
    if "delta_mib" in e and "delta_mib" in r and e["delta_mib"]:
        return f"{r['delta_mib'] / e['delta_mib']:.2f}x"
    return "-"


def _fmt_load(v: list[float] | None) -> str:
    return "/".join(f"{x:.1f}" for x in v) if v else "?"


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_mib(d: dict | None) -> str:
    if not d or "peak_mib" not in d:
        return (d or {}).get("status", "-")
    return f"{d['delta_mib']:.0f} MiB (process {d['peak_mib']:.0f})"


def _ratio(a: float, r: float) -> str:
    return f"{r / a:.2f}x" if a else "-"


def _md_models(mo: dict, b: int) -> list[str]:
    c, sc, mem = mo["count"], mo["scoring"], mo["memory"]
    lines = [
        "",
        "## ESAD (two lightweight U-Nets) vs RIAD (one classic U-Net)",
        "",
        "| measure | ESAD | RIAD | RIAD / ESAD |",
        "|---|---|---|---|",
        f"| parameters | {c['esad']['parameters'] / 1e6:.2f} M | {c['riad']['parameters'] / 1e6:.2f} M | "
        f"{_ratio(c['esad']['parameters'], c['riad']['parameters'])} |",
        f"| MACs per U-Net forward (1 image) | "
        f"{' + '.join(f'{x / 1e9:.2f}' for x in c['esad']['macs_per_net_forward'])} G | "
        f"{' + '.join(f'{x / 1e9:.2f}' for x in c['riad']['macs_per_net_forward'])} G | "
        f"{_ratio(sum(c['esad']['macs_per_net_forward']), sum(c['riad']['macs_per_net_forward']))} |",
        f"| U-Net MACs per image, full scoring ({c['esad']['network_forwards_per_image']} / "
        f"{c['riad']['network_forwards_per_image']} forwards) | "
        f"{c['esad']['macs_per_image_scoring_networks'] / 1e9:.1f} G | "
        f"{c['riad']['macs_per_image_scoring_networks'] / 1e9:.1f} G | "
        f"{_ratio(*(c[m]['macs_per_image_scoring_networks'] for m in ('esad', 'riad')))} |",
    ]
    for batch in ("1", str(b)):
        for path in ("fast", "plain"):
            if f"esad/{path}" not in sc[batch]:
                continue
            e, r = sc[batch][f"esad/{path}"], sc[batch][f"riad/{path}"]
            label = {
                "fast": "fast_scoring on",
                "plain": "fast_scoring off (plain eager)",
            }[path]
            lines.append(
                f"| full scoring, batch {batch}, {label}: latency | {_fmt_s(e['median_s'])} | "
                f"{_fmt_s(r['median_s'])} | {_ratio(e['median_s'], r['median_s'])} |"
            )
            lines.append(
                f"| full scoring, batch {batch}, {label}: images/s | {e['images_per_s']:.3g} | "
                f"{r['images_per_s']:.3g} | {e['images_per_s'] / r['images_per_s']:.2f}x (ESAD / RIAD) |"
            )
    lines.append(
        f"| full scoring peak memory (batch 1) | {_fmt_mib(mem['esad']['scoring_b1'])} | "
        f"{_fmt_mib(mem['riad']['scoring_b1'])} | "
        f"{_ratio(*(mem[m]['scoring_b1'].get('delta_mib', 0) for m in ('esad', 'riad')))} |"
    )
    return lines


def _md_authors(au: dict) -> list[str]:
    lines = [
        "",
        "## Ours vs a plain re-statement of theirs (ESAD full scoring; the comparison we control)",
        "",
        "The authors' test-time procedure written out plainly (for each cutout size, for each of the K "
        "masks one at a time: cutout, inpainting net, test fill, reconstruction net; eager, float32, "
        "no BatchNorm folding, no channels_last) against the library's paths, timed side by side in "
        f"one process. Maps checked equal first (tolerance {au['tolerance']:g}).",
        "",
        "| batch | path | time | images/s | speed-up over theirs | max abs map diff vs theirs |",
        "|---|---|---|---|---|---|",
    ]
    for batch, res in au["timing"].items():
        t_theirs = res[THEIRS]["median_s"]
        for name in (THEIRS, OURS_PLAIN, OURS_FAST):
            if name not in res:
                continue
            d = au["max_abs_diff"][batch].get(name)
            lines.append(
                f"| {batch} | {name} | {_fmt_s(res[name]['median_s'])} | {res[name]['images_per_s']:.3g} | "
                f"{t_theirs / res[name]['median_s']:.2f}x | {'-' if d is None else f'{d:.1e}'} |"
            )
    return lines


def _fmt_mem_mib(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{round(v)} MiB"


def _md_train(ts: dict) -> list[str]:
    lines = [
        "",
        f"## Training step time and peak memory per image (batches {ts['batches']} measured; batch "
        f"{ts['target_batch']} extrapolated from the per-image slope)",
        "",
        "Step time: median of interleaved steps in one process ("
        + ", ".join(f"{k}: {r} after {w} warm-up" for k, (w, r) in ts["timing"].items())
        + "); memory: the step's peak in a fresh process (first step). Per image = value(batch 2) - "
        "value(batch 1) (time: of the fastest repeat of each). Rows marked *extrapolated* are a linear "
        "model, not measurements; where the batch is also measured, the two rows show how far it holds.",
        "",
        "| setting | model | option | batch | source | step time | per image | peak memory (step) "
        "| per image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ts["rows"]:
        values = ", ".join(f"{k}={v}" for k, v in r.get("option_values", {}).items())
        head = f"| {r['setting']} | {r['method']} | {r['option']}" + (f" ({values})" if values else "")
        if "batches" not in r or "same_as" in r:  # not available, or the same config as another row
            why = f"{r['status']}: see its rows" if "same_as" in r else r["status"]
            lines.append(f"{head} | - | {why} | - | - | - | - |")
            continue
        per = r["per_image"]
        for b, d in r["batches"].items():
            per_image_s = d["step_s"] / int(b) if d["step_s"] is not None else None
            lines.append(
                f"{head} | {b} | measured | {_fmt_s(d['step_s'])} | {_fmt_s(per_image_s)} | "
                f"{_fmt_mib(d['memory'])} | "
                f"{_fmt_mem_mib(d['memory'].get('delta_mib', math.nan) / int(b))} |"
            )
        ext, n = r["target"]["extrapolated"], r["target"]["batch"]
        mem_ext = (
            _fmt_mem_mib(ext.get("memory_delta_mib")) if "memory_delta_mib" in ext else ext["memory_status"]
        )
        lines.append(
            f"{head} | {n} | **extrapolated** from batch 1-2 | {_fmt_s(ext['step_s'])} | "
            f"{_fmt_s(per['step_s_per_image'])} (slope) | {mem_ext} | "
            f"{_fmt_mem_mib(per.get('memory_mib_per_image'))} (slope) |"
        )
        gpu = r["target"].get("measured", {})
        if "status" in gpu:
            lines.append(f"{head} | {n} | {gpu['source']} | {gpu['status']} | - | - | - |")
    return lines


def _md_inference(inf: list) -> list[str]:
    lines = [
        "",
        "## Inference options (one cutout size, K masks batched, batch 1; vs the same model's eager)",
        "",
        "| model | option | status | time | speed-up vs eager | max abs diff (tol) | equal |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in inf:
        if "median_s" in r:
            extra = f", compile {r['compile_s']:.0f} s" if "compile_s" in r else ""
            lines.append(
                f"| {r['model']} | {r['option']} | {r['status']}{extra} | {_fmt_s(r['median_s'])} | "
                f"{r['speedup_vs_eager']:.2f}x | {r['max_abs_diff']:.1e} ({r['tolerance']:g}) | "
                f"{'yes' if r['equal'] else 'NO'} |"
            )
        else:
            lines.append(f"| {r['model']} | {r['option']} | {r['status']} | - | - | - | - |")
    return lines


def _md_layers(la: list) -> list[str]:
    lines = [
        "",
        f"## Where a U-Net forward spends its time (batch {la[0]['batch']} = K masks of one cutout size, "
        "inference_mode)",
        "",
        "| net | format | layer kind | time | share | GMACs | GMAC/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in la:
        for kind, d in r["kinds"].items():
            gps = f"{d['gmac_per_s']:.1f}" if d.get("gmac_per_s") else "-"
            lines.append(
                f"| {r['net']} | {r['format']} | {kind} | {d['ms']:.1f} ms | {100 * d['share']:.0f} % | "
                f"{d['gmacs']:.2f} | {gps} |"
            )
    return lines


def _md_metrics(me: dict) -> list[str]:
    i = me["inputs"]
    lines = [
        "",
        f"## Metrics on {i['n']} maps of {i['size'][0]}x{i['size'][1]} ({i['map_dtype']}, "
        f"{i['anomalous']} anomalous images, {i['channels']} defect channels)",
        "",
        "| metric | value | time | peak memory (call; process) |",
        "|---|---|---|---|",
    ]
    for m in ("au_spro", "pixel_auroc"):
        f = me["full"][m]
        lines.append(f"| {m} | {f['value']:.6f} | {_fmt_s(f['median_s'])} | {_fmt_mib(f['memory'])} |")
    s = me["subset"]
    lines += [
        "",
        f"Fast vs brute-force reference on {s['n']} maps of {s['size'][0]}x{s['size'][1]}:",
        "",
        "| metric | fast | reference | |diff| | fast time | reference time |",
        "|---|---|---|---|---|---|",
    ]
    for m in ("au_spro", "pixel_auroc"):
        a, r = s["timing"][m], s["timing"][f"{m}_reference"]
        lines.append(
            f"| {m} | {a['value']:.8f} | {r['value']:.8f} | {s['diff'][m]:.1e} | "
            f"{_fmt_s(a['median_s'])} | {_fmt_s(r['median_s'])} |"
        )
    return lines


def _md_score_maps(sm: dict) -> list[str]:
    h, w = sm["size"]
    lines = ["", f"## `esad score-maps` on {3 * sm['per_label']} maps of {w}x{h} (one process each)", "",
             "| contender | wall s | CPU s | peak RSS (GB) |", "|---|---:|---:|---:|"]
    for r in sm["rows"]:
        lines.append(f"| {r['contender']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_gb']:.2f} |")
    if not sm["official_dir"]:
        lines += ["", "(MVTec's official evaluation not timed: set MVTEC_LOCO_EVAL_DIR to its folder)"]
    return lines


def _md_header(meta: dict) -> list[str]:
    """Title, device, profile, repeat counts and load average of the run."""
    return [
        f"# ESAD benchmark ({'quick' if meta['quick'] else 'full'}) -- {meta['date']}",
        "",
        f"Device: {meta['device_name']}; torch {meta['torch']}, {meta['threads']} threads; profile "
        f"`{meta['profile']}` ({meta['image_size'][0]}x{meta['image_size'][1]}, base width "
        f"{meta['base_width']}, {meta['cutout_sizes']} cutouts x {meta['num_masks']} masks). "
        f"Median of {meta['repeats']} interleaved repeats after {meta['warmup']} warm-up "
        f"(batched scoring: median of {meta['heavy_repeats']} after "
        f"{meta['heavy_warmup']} warm-up). Load average at start "
        f"{_fmt_load(meta.get('load_average_start'))}, at end {_fmt_load(meta.get('load_average_end'))} "
        "(2 cores: above 2 means other processes competed for the CPU).",
    ]


def _md_targets(tg: list) -> list[str]:
    lines = ["", "## Targets (reported, not asserted)", "", "| target | measured | met |", "|---|---|---|"]
    for t in tg:
        met = "yes" if t["met"] else "no"
        lines.append(f"| {t['target']} | {t['measured']} | {met} {t['note']} |")
    return lines


def _md_errors(errs: dict) -> list[str]:
    return ["", "## Sections that failed", ""] + [f"- {k}: {v}" for k, v in errs.items()]


#: the sections of results.md in order: (key in the results, its formatter given the section and meta)
MD_SECTIONS: tuple[tuple[str, Callable[[Any, dict], list[str]]], ...] = (
    ("models", lambda v, meta: _md_models(v, meta["batched"])),
    ("authors", lambda v, meta: _md_authors(v)),
    ("train", lambda v, meta: _md_train(v)),
    ("inference", lambda v, meta: _md_inference(v)),
    ("layers", lambda v, meta: _md_layers(v)),
    ("metrics", lambda v, meta: _md_metrics(v)),
    ("score_maps", lambda v, meta: _md_score_maps(v)),
    ("targets", lambda v, meta: _md_targets(v)),
    ("errors", lambda v, meta: _md_errors(v)),
)


def format_markdown(res: dict[str, Any]) -> str:
    """The results as markdown tables (what ``benchmarks/bench.py`` prints and writes to results.md); a
    section absent or empty in ``res`` is left out."""
    meta = res["meta"]
    lines = _md_header(meta)
    for key, fmt in MD_SECTIONS:
        if res.get(key):
            lines += fmt(res[key], meta)
    return "\n".join(lines) + "\n"


def write_results(res: dict[str, Any], errors: dict[str, str], out: Path, t_start: float) -> None:
    """Add errors, targets, total time and end load to ``res``; write results.json and results.md."""
    if errors:
        res["errors"] = errors
    res["targets"] = targets(res)
    res["meta"]["total_s"] = time.perf_counter() - t_start
    res["meta"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    atomic_write_text(out / "results.json", json.dumps(res, indent=2, default=str) + "\n")
    atomic_write_text(out / "results.md", format_markdown(res))

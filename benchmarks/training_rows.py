"""Rows "training step time and peak memory per image": ESAD and RIAD at the settings of
``bench_settings`` (``demo`` and ``paper``; ``smoke`` in --quick), each ESAD training option of
``TRAIN_OPTIONS`` as its own row.

One step = the trainer's step (``workloads.TrainingStep``: ``esad_lib.method.train_step.train_step``
with ``ESADLoss`` and fused Adam, the model prepared by ``esad_lib.perf.speed``).  An option is a
config diff (``checkpointing``) or the model variant ``plain_conv``
(``workloads.plain_grouped_conv``: the expanding grouped conv as a plain ``nn.Conv2d``, the
measurement behind the library's form of that layer).  For each contender:

* step time: all contenders of a setting timed in THIS process, interleaved (round-robin, after
  the setting's warm-up steps), median of its repeats (``train_timing``);
* peak memory: one step in a fresh subprocess per batch (``memory.peak_memory``: the call's
  resident-set peak on CPU, the allocator's peak on CUDA), first step of the process so that no
  earlier step's freed memory hides what this one needs;
* per image: the slope between batch 1 and batch 2 (for time: of the fastest repeat of each),
      per_image = value(2) - value(1),   fixed = value(1) - per_image,
  and the target batch (8, the paper's) as ``value(1) + per_image * (8 - 1)``, labelled
  **extrapolated**.  Where the target batch is also measured (``demo`` on CPU, every setting on
  CUDA) it is a row of its own, so the linear model can be checked against it.  On a CPU run
  the measured-on-GPU rows say "no GPU": never estimated.

An option whose config field the ``ESADConfig`` of this build lacks is reported as "not
available in this build" (so that the rows work before and after that field is merged); an
option whose config equals an earlier option's (e.g. a preset that already has it on) is
reported as the same measurement, not measured twice.
"""

from __future__ import annotations

import dataclasses
import gc
import json
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.memory import peak_memory
from benchmarks.timing import time_interleaved
from benchmarks.workloads import cfg_for, make_train_step
from esad_lib.config import ESADConfig

#: ESAD's training options, each measured as its own row ("default": the preset): a config diff,
#: plus ``plain_conv`` (a model variant, not a config field).
TRAIN_OPTIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "checkpointing off": {"checkpointing": False},
    "checkpointing on": {"checkpointing": True},
    "plain grouped conv": {"plain_conv": True},
    "plain grouped conv, checkpointing on": {"plain_conv": True, "checkpointing": True},
}

#: option keys that build a model variant instead of changing the config.
MODEL_VARIANTS = ("plain_conv",)


def missing_fields(diff: dict[str, Any]) -> list[str]:
    """The fields of ``diff`` (model variants aside) that this build's ``ESADConfig`` does not have."""
    names = {f.name for f in dataclasses.fields(ESADConfig)}
    return [k for k in diff if k not in names and k not in MODEL_VARIANTS]


def _split(diff: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``(config diff, plain_conv)`` of an option."""
    return {k: v for k, v in diff.items() if k not in MODEL_VARIANTS}, bool(diff.get("plain_conv"))


def _option_fields() -> list[str]:
    """The fields that ``TRAIN_OPTIONS`` sets and this build's ``ESADConfig`` has."""
    wanted = sorted({k for diff in TRAIN_OPTIONS.values() for k in _split(diff)[0]})
    return [k for k in wanted if not missing_fields({k: None})]


def linear_fit(v1: float, v2: float) -> tuple[float, float]:
    """``(per_image, fixed)`` of the line through ``(1, v1)`` and ``(2, v2)``."""
    # per_image = v(2) - v(1);  fixed = v(1) - per_image
    per_image = v2 - v1
    return per_image, v1 - per_image


def _contenders(setting: str, device: torch.device) -> list[dict[str, Any]]:
    """One entry per (method, option): the config, or why the option cannot run here."""
    out: list[dict[str, Any]] = []
    for method in ("esad", "riad"):
        base = cfg_for(setting, method, str(device))
        options = TRAIN_OPTIONS if method == "esad" else {"default": {}}
        seen: dict[str, str] = {}  # config key -> option measured with it
        for option, diff in options.items():
            row: dict[str, Any] = {"setting": setting, "method": method, "option": option, "diff": diff}
            missing = missing_fields(diff)
            if missing:
                row["status"] = f"not available in this build: ESADConfig has no field {', '.join(missing)}"
                out.append(row)
                continue
            cfg_diff, plain_conv = _split(diff)
            cfg = base.replace(**cfg_diff)
            # every field counts here (cfg.key() leaves out fields that do not change results,
            # such as checkpointing, which is what these rows measure)
            key = (json.dumps(cfg.to_dict(), sort_keys=True, default=str), plain_conv)
            row["preset_diff"] = cfg.diff(base)
            # what the options' fields are in this row's config (a preset may have one on already)
            values = cfg.to_dict()
            row["option_values"] = {k: values[k] for k in _option_fields()}
            if key in seen:
                row["status"], row["same_as"] = f"same config as '{seen[key]}'", seen[key]
            else:
                seen[key] = option
                row["status"], row["cfg"], row["plain_conv"] = "ok", cfg, plain_conv
            out.append(row)
    return out


def _batches(setting: str, st: dict, device: torch.device) -> tuple[list[int], int, bool]:
    """``(batches to measure, target batch, whether the target is measured)``: batch 1 and 2 (the
    slope), plus the target where it is measured (CUDA, or CPU where the settings ask for it)."""
    measure_target = device.type == "cuda" or bool(st["train_measure_target_cpu"].get(setting))
    target = int(st["train_target"])
    batches = [int(b) for b in st["train_batches"]]
    if batches[:2] != [1, 2]:
        raise ValueError(f"train_batches must start with 1, 2 (the slope), got {batches}")
    if measure_target and target not in batches:
        batches.append(target)
    return batches, target, measure_target


def _measure_memory(
    live: list[dict[str, Any]],
    batches: list[int],
    setting: str,
    device: torch.device,
    log: Callable[[str], None],
) -> None:
    """``r["batches"][b]["memory"]`` for each row and batch, each step in a fresh process: a step
    that does not fit is reported there and never run in this process (where running out of
    memory would end the whole benchmark)."""
    for r in live:
        r["batches"] = {}
        for b in batches:
            spec = {
                "kind": "train_step",
                "cfg": r["cfg"].replace(batch_size=b).to_dict(),
                "plain_conv": r["plain_conv"],
                "threads": torch.get_num_threads(),
                "warmup": False,
            }
            r["batches"][str(b)] = {"source": "measured", "memory": peak_memory(spec, device)}
        log(f"train: {setting} {r['method']} {r['option']} memory measured")


def _time_steps(
    live: list[dict[str, Any]], setting: str, st: dict, device: torch.device, log: Callable[[str], None]
) -> None:
    """``step_s`` and ``timing`` of each row and batch whose memory probe passed (``None`` for
    the others): all of them timed interleaved in this process."""
    steps = {
        f"{r['method']}/{r['option']}/{b}": make_train_step(
            r["cfg"].replace(batch_size=int(b)), device, plain_conv=r["plain_conv"]
        )
        for r in live
        for b, d in r["batches"].items()
        if "status" not in d["memory"]
    }
    warmup, repeats = (int(v) for v in st["train_timing"][setting])
    times = time_interleaved(steps, repeats, warmup, device)
    del steps
    gc.collect()
    log(f"train: {setting} steps timed")
    for r in live:
        for b, d in r["batches"].items():
            t = times.get(f"{r['method']}/{r['option']}/{b}")
            d["step_s"], d["timing"] = (t["median_s"], t) if t else (None, None)
        r["timing"] = {"warmup": warmup, "repeats": repeats}


def _share_same_config(rows: list[dict[str, Any]]) -> None:
    """Options that are the same config as an earlier one share its measurement; drop the configs."""
    for r in rows:
        if "same_as" in r:
            src = next(x for x in rows if x["method"] == r["method"] and x["option"] == r["same_as"])
            for k in ("batches", "per_image", "target", "timing"):
                if k in src:
                    r[k] = src[k]
        r.pop("cfg", None)
        r.pop("plain_conv", None)


def _measure_setting(
    setting: str, st: dict, device: torch.device, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """The rows of one setting: memory (fresh processes) first, then time, then the fits."""
    rows = _contenders(setting, device)
    batches, target, measure_target = _batches(setting, st, device)
    live = [r for r in rows if r["status"] == "ok"]
    _measure_memory(live, batches, setting, device, log)
    _time_steps(live, setting, st, device, log)
    for r in live:
        _fit(r, target, measure_target, device)
    _share_same_config(rows)
    return rows


def _fit(r: dict[str, Any], target: int, measured_target: bool, device: torch.device) -> None:
    """Per-image slopes from batch 1 and 2; the extrapolated (and maybe measured) target rows."""
    b1, b2 = r["batches"]["1"], r["batches"]["2"]
    per: dict[str, Any] = {}
    ext: dict[str, Any] = {"source": f"extrapolated from batch 1-2 to batch {target}"}
    if b1["step_s"] is not None and b2["step_s"] is not None:
        # the time slope uses the fastest repeat of each batch: other processes on a shared
        # machine only ever add time, and a slope of two medians inherits their noise twice
        t1, t2 = b1["timing"]["min_s"], b2["timing"]["min_s"]
        t_per, t_fix = linear_fit(t1, t2)
        per["step_s_per_image"], per["step_s_fixed"] = t_per, t_fix
        # value(target) = value(1) + per_image * (target - 1)
        ext["step_s"] = t1 + t_per * (target - 1)
    else:
        per["step_s_per_image"] = ext["step_s"] = None  # a step that failed its memory probe
    if "delta_mib" in b1["memory"] and "delta_mib" in b2["memory"]:
        m_per, m_fix = linear_fit(b1["memory"]["delta_mib"], b2["memory"]["delta_mib"])
        per["memory_mib_per_image"], per["memory_mib_fixed"] = m_per, m_fix
        ext["memory_delta_mib"] = b1["memory"]["delta_mib"] + m_per * (target - 1)
    else:
        why = b1["memory"].get("status") or b2["memory"].get("status") or "no memory figure"
        per["memory_status"] = ext["memory_status"] = why
    r["per_image"] = per
    r["target"] = {"batch": target, "extrapolated": ext}
    if measured_target:
        r["target"]["measured"] = r["batches"][str(target)]
    elif device.type != "cuda":
        r["target"]["measured"] = {"source": "measured on GPU", "status": "no GPU (CUDA absent in this run)"}


def section_train(st: dict, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """Training step time and peak memory per image for each setting, model and option."""
    out: dict[str, Any] = {
        "target_batch": int(st["train_target"]),
        "batches": [int(b) for b in st["train_batches"]],
        "timing": {k: list(v) for k, v in st["train_timing"].items()},
        "options": TRAIN_OPTIONS,
        "rows": [],
    }
    for setting in st["train_settings"]:
        out["rows"] += _measure_setting(setting, st, device, log)
    return out

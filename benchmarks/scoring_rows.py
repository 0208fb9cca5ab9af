"""Rows "ESAD vs RIAD" and "ours vs a plain re-statement of theirs".

ESAD vs RIAD (``section_models``): parameters, MACs, full test-time scoring (batch 1 and batched,
``cfg.fast_scoring`` on and off; ``esad_lib.scoring.anomaly_maps``) and its peak memory.  The
paper (abstract; README "2. Proposed Method") introduces the lightweight U-Net "to meet
industrial requirements"; these rows measure that claim against the RIAD baseline at the
profile's resolution and width.

Ours vs theirs (``section_authors``): the library's scoring against the authors' test-time
procedure written out plainly (paper "Testing"; the authors' README "3. Key Algorithms" with
``select = 1`` and "Scoring").  The re-statement (``authors_inference_maps``) is the contender,
not the library's path: for each cutout size, for each of the K masks ONE AT A TIME,
``cutout -> inpainting net -> test fill (0.5 * pre + 0.5 * img on the hidden cells) ->
reconstruction net -> keep the hidden cells``; then the map of each cutout size, averaged and
smoothed by the library's own ``feature_map`` / ``pixel_map`` and ``smooth_maps``.  Eager,
float32, the model as trained (no BatchNorm folding, no channels_last), under ``torch.no_grad``;
the masks are the library's fixed scoring masks (seed ``cfg.seed``), so that the maps can be
compared: they are checked equal to the library's within ``FAST_PATH_ATOL`` before anything is
timed.  What is compared is how the networks are run: one mask at a time against the model's
batched masks (``fast_scoring`` off), and against the fast path (BatchNorm folded,
channels_last, ``inference_mode``).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.memory import peak_memory
from benchmarks.timing import time_scoring_batch
from benchmarks.workloads import cfg_for, make_scoring, random_images, scoring_extractor, seeded_model
from esad_lib.config import PRESETS, ESADConfig
from esad_lib.method.anomaly_map import feature_map, pixel_map, smooth_maps
from esad_lib.method.model import scoring_masks
from esad_lib.perf import counting
from esad_lib.scoring import FAST_PATH_ATOL


def count(model: torch.nn.Module, cfg: ESADConfig) -> dict[str, Any]:
    """Parameters and MACs: per U-Net forward (1 image) and per image of full scoring."""
    nets = [n for n in (model.inpaint_net, model.recon_net) if n is not None]
    h, w = cfg.image_size
    per_net = [int(counting.count_macs(n, (1, 3, h, w))) for n in nets]
    # full scoring of one image = every cutout size x K masks x every net
    n_fwd = len(cfg.cutout_sizes) * int(cfg.num_masks)
    return {
        "parameters": int(counting.count_parameters(model)),
        "nets": len(nets),
        "macs_per_net_forward": per_net,
        "macs_per_image_scoring_networks": n_fwd * sum(per_net),
        "network_forwards_per_image": n_fwd * len(nets),
    }


def section_models(st: dict, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """ESAD vs RIAD: size, compute, full scoring (batch 1 and batched) and its peak memory."""
    methods = ("esad", "riad")
    cfgs = {m: cfg_for(st["profile"], m, str(device)) for m in methods}
    models = {m: seeded_model(cfgs[m], device) for m in methods}
    out: dict[str, Any] = {"config": {m: cfgs[m].diff(PRESETS[st["profile"]]) for m in methods}}
    out["count"] = {m: count(models[m], cfgs[m]) for m in methods}
    log("models: counted parameters and MACs")

    # full scoring: batch 1 with the fast path on and off; batched with the fast path only (the
    # plain path scores the images of a batch one at a time, i.e. it IS the batch-1 plain path)
    out["scoring"] = {}
    for batch in (1, st["batched"]):
        fns = {}
        for m in methods:
            for fast in (True, False) if batch == 1 else (True,):
                fns[f"{m}/{'fast' if fast else 'plain'}"] = make_scoring(
                    cfgs[m].replace(fast_scoring=fast), batch, device, models[m]
                )
        res = time_scoring_batch(fns, st, batch, device)
        out["scoring"][str(batch)] = res
        del fns
        gc.collect()
        log(f"models: timed full scoring at batch {batch}")

    # peak memory of scoring one image (a subprocess each on CPU)
    mem = out.setdefault("memory", {})
    for m in methods:
        base = {"cfg": cfgs[m].to_dict(), "threads": torch.get_num_threads(), "warmup": False}
        mem.setdefault(m, {})["scoring_b1"] = peak_memory({"kind": "score", "batch": 1, **base}, device)
    log("models: measured peak memory")
    return out


#: the authors' test fill mixes inpainting and input half and half (the presets' fill_alpha).
AUTHORS_ALPHA = 0.5

THEIRS = "theirs, re-stated plainly (masks one at a time, eager)"
OURS_FAST = "ours: fast path (fast_scoring on)"
OURS_PLAIN = "ours: fast_scoring off (plain eager)"


def authors_inference_maps(
    model: torch.nn.Module, images: torch.Tensor, cfg: ESADConfig, extractor: torch.nn.Module | None
) -> torch.Tensor:
    """Smoothed anomaly maps by the authors' test-time procedure, written plainly.

    ``images [B,3,H,W]`` in [-1, 1] -> ``maps [B,H,W]``.  ``model`` is an ESAD model (it has an
    inpainting net), in eval mode; ``extractor`` the feature extractor of ``cfg.score_map =
    "feature"`` (None for "pixel").
    """
    if model.inpaint_net is None:
        raise ValueError("authors_inference_maps needs an ESAD model (with an inpainting net), got RIAD's")
    if cfg.test_fill != "test" or cfg.fill_alpha != AUTHORS_ALPHA:
        raise ValueError(
            f"the authors' test fill is 'test' with alpha {AUTHORS_ALPHA}; cfg has test_fill="
            f"{cfg.test_fill!r}, fill_alpha={cfg.fill_alpha} (use the preset's values)"
        )
    model.eval()
    h, w = images.shape[-2:]
    masks = scoring_masks(h, w, cfg.cutout_sizes, cfg.num_masks, cfg.seed, images.device)
    with torch.no_grad():
        total = None
        for c in cfg.cutout_sizes:
            recon = torch.zeros_like(images)
            for k in range(int(cfg.num_masks)):
                m = masks[int(c)][k : k + 1]  # [1,1,H,W], 1 visible, 0 hidden
                # cutout = img * m
                cutout = images * m
                # pre = G1(cutout)
                pre = model.inpaint_net(cutout)
                # filled = cutout + 0.5 * pre * (1 - m) + 0.5 * img * (1 - m)     (select = 1)
                filled = cutout + 0.5 * pre * (1 - m) + 0.5 * images * (1 - m)
                # recon += G2(filled) * (1 - m)
                recon = recon + model.recon_net(filled) * (1 - m)
            if cfg.score_map == "feature":
                map_c = feature_map(extractor, images, recon)
            else:
                map_c = pixel_map(images, recon)
            total = map_c if total is None else total + map_c
        # M = (1 / |C|) sum_c M_c, then smoothed
        return smooth_maps((total / len(cfg.cutout_sizes)).float(), cfg)


def section_authors(st: dict, device: torch.device, log: Callable[[str], None]) -> dict[str, Any]:
    """ESAD's full scoring: the library's fast path vs the plain re-statement of the authors'
    procedure (maps checked equal first), at batch 1 and batched."""
    cfg = cfg_for(st["profile"], "esad", str(device))
    model = seeded_model(cfg, device).eval()
    extractor = scoring_extractor(model, cfg)
    out: dict[str, Any] = {"tolerance": FAST_PATH_ATOL, "max_abs_diff": {}, "timing": {}, "speedup": {}}
    for batch in (1, st["batched"]):
        # the same images as make_scoring's (seed cfg.seed + 1)
        images = random_images(batch, cfg.image_size, cfg.seed + 1).to(device)
        fns = {
            THEIRS: lambda images=images: authors_inference_maps(model, images, cfg, extractor),
            OURS_FAST: make_scoring(cfg.replace(fast_scoring=True), batch, device, model),
        }
        if batch == 1:  # the plain path scores a batch one image at a time: batch 1 says it all
            fns[OURS_PLAIN] = make_scoring(cfg.replace(fast_scoring=False), batch, device, model)
        theirs = fns[THEIRS]()
        diffs = {n: float((fn() - theirs).abs().max()) for n, fn in fns.items() if n != THEIRS}
        out["max_abs_diff"][str(batch)] = diffs
        if max(diffs.values()) > FAST_PATH_ATOL:
            raise AssertionError(
                f"authors' re-statement differs from the library's maps at batch {batch}: {diffs} "
                f"> {FAST_PATH_ATOL:g}; not timed"
            )
        res = time_scoring_batch(fns, st, batch, device)
        out["timing"][str(batch)] = res
        # speed-up = t(theirs) / t(ours, fast)
        out["speedup"][str(batch)] = res[THEIRS]["median_s"] / res[OURS_FAST]["median_s"]
        del fns
        gc.collect()
        log(f"authors: timed ours vs theirs at batch {batch}")
    out["equal"] = all(d <= FAST_PATH_ATOL for ds in out["max_abs_diff"].values() for d in ds.values())
    return out

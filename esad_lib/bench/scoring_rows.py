"""Rows "ESAD vs RIAD": parameters, MACs, full test-time scoring (batch 1 and batched, with
``cfg.fast_scoring`` on and off, and the networks in ONNX Runtime) and its peak memory.

The paper (abstract; README "2. Proposed Method") introduces the lightweight U-Net "to meet
industrial requirements"; these rows measure that claim against the RIAD baseline at the
profile's resolution and width.
"""

from __future__ import annotations

import copy
import gc
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from esad_lib.bench.memory import peak_memory
from esad_lib.bench.onnx_session import onnx_option
from esad_lib.bench.settings import cfg_for
from esad_lib.bench.workloads import build_model, make_scoring, random_images, scoring_extractor
from esad_lib.config import PRESETS, ESADConfig
from esad_lib.method.anomaly_map import average_over_cutouts, smooth_maps
from esad_lib.method.model import scoring_masks
from esad_lib.perf import counting
from esad_lib.perf.timing import time_scoring_batch
from esad_lib.scoring import FAST_PATH_ATOL, anomaly_maps, prepare_scoring


class AllReconstructions(torch.nn.Module):
    """Test-fill reconstructions for every cutout size with the fixed scoring masks (what
    ``ESADModel.reconstruct_all`` computes): ``img [B,3,H,W] -> [C,B,3,H,W]`` (C cutout sizes)."""

    def __init__(self, model: torch.nn.Module, cfg: ESADConfig, size: tuple[int, int]) -> None:
        super().__init__()
        self.model, self.fill = model, model.test_fill if cfg.test_fill is None else cfg.test_fill
        masks = scoring_masks(size[0], size[1], cfg.cutout_sizes, model.num_masks, cfg.seed)
        self.cutouts = list(masks)
        for c, m in masks.items():
            self.register_buffer(f"masks_{c}", m)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        outs = [
            self.model(img, c, fill=self.fill, masks=getattr(self, f"masks_{c}")).recon for c in self.cutouts
        ]
        return torch.stack(outs)


def make_scoring_onnx(
    cfg: ESADConfig, batch: int, device: torch.device, model: torch.nn.Module, tmp: Path
) -> tuple[Callable[[], torch.Tensor] | None, str]:
    """Full scoring with the networks run by ONNX Runtime (CPU): one exported graph holds every
    cutout size x every mask; the maps (feature extractor, smoothing) stay in torch, computed by
    the library's ``average_over_cutouts`` and ``smooth_maps``.  ``(None, why)`` when it
    cannot run.  The export happens here, before timing."""
    if device.type != "cpu":
        return None, "skipped: measured on CPU runs only"
    model = copy.deepcopy(model).eval()
    images = random_images(batch, cfg.image_size, cfg.seed + 1)
    t0 = time.perf_counter()
    fn, why = onnx_option(AllReconstructions(model, cfg, tuple(cfg.image_size)).eval(), images, tmp)
    if fn is None:
        return None, why
    export_s = time.perf_counter() - t0
    _, extractor = prepare_scoring(model, scoring_extractor(model, cfg))
    images_cl = images.contiguous(memory_format=torch.channels_last)

    def run() -> torch.Tensor:
        recons = torch.from_numpy(fn())
        with torch.inference_mode():
            rec = {
                c: recons[i].contiguous(memory_format=torch.channels_last)
                for i, c in enumerate(cfg.cutout_sizes)
            }
            maps = average_over_cutouts(images_cl, rec, extractor, cfg.score_map)
            return smooth_maps(maps.contiguous().float(), cfg)

    ref = anomaly_maps(
        model, images, cfg.replace(fast_scoring=False), extractor=scoring_extractor(model, cfg)
    )
    diff = float((run() - ref).abs().max())
    if diff > FAST_PATH_ATOL:
        return None, f"failed: maps differ from the eager path by {diff:.1e} > {FAST_PATH_ATOL:g}"
    return run, f"{why}; export + session {export_s:.1f} s; maps equal the eager ones within {diff:.1e}"


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
    models = {m: build_model(cfgs[m], device) for m in methods}
    out: dict[str, Any] = {"config": {m: cfgs[m].diff(PRESETS[st["profile"]]) for m in methods}}
    out["count"] = {m: count(models[m], cfgs[m]) for m in methods}
    log("models: counted parameters and MACs")

    # full scoring: batch 1 with the fast path on and off; batched with the fast path only (the
    # plain path scores the images of a batch one at a time, i.e. it IS the batch-1 plain path)
    out["scoring"] = {}
    tmp = tempfile.TemporaryDirectory(prefix="esad_bench_onnx_")
    for batch in (1, st["batched"]):
        fns = {}
        for m in methods:
            for fast in (True, False) if batch == 1 else (True,):
                fns[f"{m}/{'fast' if fast else 'plain'}"] = make_scoring(
                    cfgs[m].replace(fast_scoring=fast), batch, device, models[m]
                )
            if batch == 1:  # the networks in ONNX Runtime (not a library path; see scoring.py)
                fn, why = make_scoring_onnx(cfgs[m], batch, device, models[m], Path(tmp.name))
                out.setdefault("onnx_status", {})[m] = why
                if fn is not None:
                    fns[f"{m}/onnxruntime"] = fn
        res = time_scoring_batch(fns, st, batch, device)
        out["scoring"][str(batch)] = res
        del fns
        gc.collect()
        log(f"models: timed full scoring at batch {batch}")
    tmp.cleanup()

    # peak memory of scoring one image (a subprocess each on CPU)
    mem = out.setdefault("memory", {})
    for m in methods:
        base = {"cfg": cfgs[m].to_dict(), "threads": torch.get_num_threads(), "warmup": False}
        mem.setdefault(m, {})["scoring_b1"] = peak_memory({"kind": "score", "batch": 1, **base}, device)
    log("models: measured peak memory")
    return out

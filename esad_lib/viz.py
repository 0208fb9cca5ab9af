"""Plotting helpers of the lessons (notebooks 02-09): images, anomaly maps, diagrams, explorer logic.

Images are in [-1, 1], ``[3,H,W]`` or ``[H,W,3]``; maps are ``[H,W]`` with a colour bar saying what
the values are (``map_value_label``).  The diagrams restate the authors' README ("2. Proposed
Method", the fills of "3. Key Algorithms").  The explorer's logic (notebook 09) is here so that
the tests cover it headless."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.image import AxesImage
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch, Rectangle

from esad_lib.config import ESADConfig
from esad_lib.method import unet_widths

ArrayLike = torch.Tensor | np.ndarray

RAW_LABELS = {"pixel": "1 - MSGMS (raw)", "feature": "feature distance 1 - cos (raw)"}


def map_value_label(cfg: ESADConfig, standardised: bool | None = None) -> str:
    """The colour-bar label of ``cfg``'s maps (``standardised=None``: per ``cfg.map_normalization``)."""
    norm = cfg.map_normalization
    if standardised is None:
        standardised = norm != "none"
    if not standardised:
        return RAW_LABELS[cfg.score_map]
    return f"z-score vs {norm if norm != 'none' else 'train'}/good"


def _numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def to_rgb(x: ArrayLike) -> np.ndarray:
    """An image in [-1, 1], ``[3,H,W]`` or ``[H,W,3]`` -> ``uint8 [H,W,3]`` (the loader's inverse)."""
    a = _numpy(x)
    if a.ndim != 3 or 3 not in (a.shape[0], a.shape[-1]):
        raise ValueError(f"to_rgb: expected an image [3,H,W] or [H,W,3], got shape {tuple(a.shape)}")
    if a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    return np.rint((np.clip(a, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def _untick(ax: Axes, title: str | None, im: AxesImage) -> AxesImage:
    if title:
        ax.set_title(title, fontsize=8)
    ax.set(xticks=[], yticks=[])
    return im


def show_image(ax: Axes, x: ArrayLike, title: str | None = None) -> AxesImage:
    """Draw an image in [-1, 1] (``[3,H,W]`` or ``[H,W,3]``) without ticks; 0 shows as mid-grey."""
    return _untick(ax, title, ax.imshow(to_rgb(x)))


def show_mask(ax: Axes, m: ArrayLike, title: str | None = None, cmap: str = "gray", **kw: Any) -> AxesImage:
    """Draw a mask or label image ``[H,W]`` (e.g. 1 = visible, 0 = hidden) without a colour bar."""
    return _untick(ax, title, ax.imshow(_numpy(m), cmap=cmap, interpolation="nearest", **kw))


def show_map(ax: Axes, m: ArrayLike, title: str | None = None, label: str = "raw map value",
             cmap: str = "inferno", vmin: float | None = None, vmax: float | None = None,
             colorbar: bool = True) -> AxesImage:
    """Draw an anomaly map ``[H,W]`` with a colour bar labelled ``label`` (what the values are)."""
    im = _untick(ax, title, ax.imshow(_numpy(m), cmap=cmap, vmin=vmin, vmax=vmax))
    if colorbar:
        cb = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        cb.set_label(label, fontsize=8)
        cb.ax.tick_params(labelsize=8)
    return im


def outline_mask(ax: Axes, mask: ArrayLike, color: str = "cyan", linewidth: float = 0.9) -> Any:
    """Draw the contour of a binary mask ``[H,W]`` over an image; None for an empty mask."""
    a = _numpy(mask).astype(np.float32) > 0.5
    if not a.any():
        return None
    return ax.contour(a.astype(np.float32), levels=[0.5], colors=color, linewidths=linewidth)


def gt_overlap(m: ArrayLike, gt: ArrayLike) -> float:
    """Share of a map's ``n`` brightest pixels inside the mask ``[H,W]`` (``n`` = its pixel count):
    ``overlap = |{m >= t} & gt| / |{m >= t}|``, ``t`` the n-th largest value; NaN for an empty mask."""
    a, g = _numpy(m).astype(np.float64), _numpy(gt) > 0.5
    if a.shape != g.shape:
        raise ValueError(f"gt_overlap: map {a.shape} and mask {g.shape} differ in size; upsample the map")
    n = int(g.sum())
    if n == 0:
        return float("nan")
    flat = a.ravel()
    t = np.partition(flat, flat.size - n)[flat.size - n]  # the n-th largest value
    flagged = a >= t
    return float((flagged & g).sum() / flagged.sum())


def clearest_example(maps: Any, masks: Any, min_area_fraction: float = 0.005) -> int:
    """Index of the image whose map finds its ground truth best (``gt_overlap``, mean over settings).
    ``maps``: ``[H,W]`` maps or ``{setting: maps}``; masks under ``min_area_fraction`` compete only
    when none is larger; ties go to the larger mask, then the lower index."""
    per_setting = list(maps.values()) if isinstance(maps, Mapping) else [maps]
    gts = [_numpy(g) > 0.5 for g in masks]
    if any(len(ms) != len(gts) for ms in per_setting):
        counts = [len(ms) for ms in per_setting]
        raise ValueError(f"clearest_example: {len(gts)} masks but maps of {counts} images")
    areas = np.asarray([g.sum() / g.size for g in gts], dtype=np.float64)
    cand = np.flatnonzero(areas >= min_area_fraction)
    if cand.size == 0:
        cand = np.flatnonzero(areas > 0)
    if cand.size == 0:
        raise ValueError("clearest_example: every ground-truth mask is empty (pass anomalous images)")
    overlap = np.asarray([np.mean([gt_overlap(ms[i], gts[i]) for ms in per_setting]) for i in cand])
    # best overlap, then larger area, then lower index (lexsort: last key is the primary one)
    order = np.lexsort((cand, -areas[cand], -overlap))
    return int(cand[order[0]])


def channels_rgb(ch: ArrayLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Ground-truth channels ``[C,H0,W0]`` -> one ``tab10`` colour each, ``float [H,W,3]`` at ``size``."""
    a = np.asarray(_numpy(ch)) > 0
    if a.ndim != 3:
        raise ValueError(f"channels_rgb: expected channels [C,H,W], got shape {a.shape}")
    out_size = tuple(size) if size is not None else a.shape[1:]
    if a.shape[0] == 0:
        return np.zeros((*out_size, 3))
    t = torch.from_numpy(a).float()[None]
    if tuple(t.shape[-2:]) != out_size:
        t = F.interpolate(t, size=out_size, mode="nearest")
    colours = plt.cm.tab10(np.arange(a.shape[0]) % 10)[:, :3]
    return np.clip(np.einsum("chw,cd->hwd", t[0].numpy(), colours), 0, 1)


def score_histogram(ax: Axes, scores: ArrayLike, label_names: list[str], this_score: float | None = None,
                    threshold: float | None = None, value_label: str = "image score", bins: int = 20) -> None:
    """Histograms of image scores per label; red line: one image's score, dashed: a threshold."""
    s = _numpy(scores).ravel()
    names = np.asarray(label_names)
    edges = np.histogram_bin_edges(s, bins=bins)
    for lab, colour in (("good", "tab:green"), ("structural", "tab:red"), ("logical", "tab:purple")):
        sel = names == lab
        if sel.any():
            ax.hist(s[sel], bins=edges, histtype="stepfilled", alpha=0.35, color=colour, edgecolor=colour,
                    lw=1.5, label=f"{lab} ({int(sel.sum())})")
    if this_score is not None:
        rank = float((s < this_score).mean())
        ax.axvline(this_score, color="red", lw=2,
                   label=f"this image: {this_score:.3f} (above {rank:.0%} of all {s.size} test images)")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel=f"image score = max of the map ({value_label})", ylabel="test images")
    ax.legend(fontsize=8)


def _box(ax: Axes, x: float, y: float, w: float, h: float, text: str, fc: str, ls: str = "-",
         fontsize: float = 8) -> None:
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=fc, ec="k", ls=ls))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize)


def _arrow(ax: Axes, a: tuple[float, float], b: tuple[float, float], **kw: Any) -> None:
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle=kw.pop("arrowstyle", "-|>"), mutation_scale=12, **kw))


def draw_feature_extraction_block(ax: Axes) -> None:
    """The feature extraction block of the lightweight U-Net, top (input) to bottom (output)."""
    ax.set(xlim=(0, 10), ylim=(-0.6, 14.2))
    ax.axis("off")
    main = [  # (y, text, colour, line style) from top to bottom
        (13.5, "input  x   [B, C_in, H, W]", "#eeeeee", "-"),
        (12.0, "group conv k×k, C_in → 2·C_in, groups = C_in", "#fdd0a2", "-"),
        (10.8, "BatchNorm + ReLU", "#f7f7f7", "-"),
        (9.6, "depthwise conv 3×3, groups = 2·C_in", "#fdd0a2", "-"),
        (8.4, "BatchNorm + ReLU", "#f7f7f7", "-"),
        (7.2, "ECA channel attention (optional, off)", "#ffffff", "--"),
        (6.0, "1×1 conv, 2·C_in → C_out", "#c6dbef", "-"),
        (4.8, "BatchNorm", "#f7f7f7", "-"),
        (1.6, "ReLU", "#f7f7f7", "-"),
        (0.2, "output  [B, C_out, H, W]", "#eeeeee", "-"),
    ]
    for y, text, color, ls in main:
        _box(ax, 0.3, y - 0.3, 6.2, 0.6, text, color, ls, fontsize=9)
    plus_y = 3.2
    stops = [y for y, *_ in main]
    stops.insert(8, plus_y)
    half = lambda y: 0.3 if y == plus_y else 0.36  # half height of the circle / of a box
    for a, b in zip(stops[:-1], stops[1:]):
        _arrow(ax, (3.4, a - half(a)), (3.4, b + half(b)))
    ax.add_patch(Circle((3.4, plus_y), 0.3, fc="white", ec="k"))  # the sum
    ax.text(3.4, plus_y, "+", ha="center", va="center", fontsize=14)
    _box(ax, 7.0, 7.3, 2.8, 1.4, "residual:\nidentity if C_in = C_out\nelse 1×1 conv + BN", "#c7e9c0")
    _arrow(ax, (6.55, 13.5), (8.4, 8.78), connectionstyle="angle,angleA=0,angleB=90")
    _arrow(ax, (8.4, 7.22), (3.72, plus_y), connectionstyle="angle,angleA=-90,angleB=0")
    ax.set_title("Feature extraction block (orange: spatial, per channel; blue: channel mixing)", fontsize=10)


def _draw_unet(ax: Axes, x0: float, y0: float, name: str, widths: tuple[int, ...], fc: str) -> tuple:
    """A U of 5 encoder and 5 decoder levels at (x0, y0) (top left); returns (entry, exit) points."""
    dx, dy, bw, bh = 0.42, 0.48, 0.36, 0.36
    n = len(widths)
    for i, w in enumerate(widths):
        kind = "c" if i == 0 else "B"  # level 1: conv-BN-ReLU; levels 2..5: feature extraction block
        ex, ey = x0 + i * dx, y0 - i * dy
        dxr = x0 + (2 * n - 2 - i) * dx
        ax.add_patch(Rectangle((ex, ey - bh), bw, bh, fc=fc, ec="k", lw=0.6))
        ax.text(ex + bw / 2, ey - bh / 2, kind, ha="center", va="center", fontsize=8)
        if i < n - 1:
            ax.add_patch(Rectangle((dxr, ey - bh), bw, bh, fc=fc, ec="k", lw=0.6))
            ax.text(dxr + bw / 2, ey - bh / 2, "B", ha="center", va="center", fontsize=8)
            ax.plot([ex + bw, dxr], [ey - bh / 2] * 2, color="grey", lw=0.6, ls=":")  # skip concat
        ax.text(ex - 0.05, ey - bh / 2, str(w), ha="right", va="center", fontsize=8, color="dimgrey")
    right = x0 + (2 * n - 2) * dx + bw
    ax.text((x0 + right) / 2, y0 + 0.25, name, ha="center", va="bottom", fontsize=8, weight="bold")
    return (x0, y0 - bh / 2), (right, y0 - bh / 2)


def draw_esad_network(ax: Axes, cfg: ESADConfig | None = None) -> None:
    """The whole ESAD network: cutout -> G1 -> fill -> G2 -> map (``cfg``'s numbers; default the paper's)."""
    shown = cfg if cfg is not None else ESADConfig()  # the defaults are the paper's numbers
    k, sizes, alpha = shown.num_masks, tuple(shown.cutout_sizes), shown.fill_alpha
    widths = tuple(unet_widths(shown.base_width))
    ax.set(xlim=(0, 17), ylim=(-0.2, 6.4))
    ax.axis("off")
    yt = 4.6  # top row centre line
    _box(ax, 0.1, yt - 0.45, 1.3, 0.9, "input $x$\n[B,3,H,W]", "#dddddd")
    _box(ax, 1.8, yt - 0.45, 1.5, 0.9, f"cutout $x\\odot M_k$\n{k} disjoint masks\nper size c", "#f4d6a0")
    _arrow(ax, (1.45, yt), (1.75, yt))
    g1_in, g1_out = _draw_unet(ax, 3.75, yt + 0.55, "inpainting U-Net $G_1$", widths, "#a9cce3")
    _arrow(ax, (3.35, yt), (g1_in[0] - 0.05, g1_in[1]))
    _box(ax, 7.95, yt - 0.6, 1.9, 1.2,
         f"fill hidden cells\ntrain: $pre_k$\ntest: {1 - alpha:g}·$pre_k$ + {alpha:g}·$x$", "#f9e79f")
    _arrow(ax, g1_out, (7.9, yt + 0.35), connectionstyle="arc3,rad=-0.2")
    g2_in, g2_out = _draw_unet(ax, 10.35, yt + 0.55, "reconstruction U-Net $G_2$", widths, "#a9cce3")
    _arrow(ax, (9.9, yt), (g2_in[0] - 0.05, g2_in[1]))
    kept = f"keep hidden cells\n$\\hat x=\\sum_{{k=1}}^{{{k}}} G_2(\\tilde x_k)\\odot(1-M_k)$"
    _box(ax, 14.5, yt - 0.6, 2.35, 1.2, kept, "#d5f5e3")
    _arrow(ax, g2_out, (14.45, yt + 0.35), connectionstyle="arc3,rad=-0.2")
    _arrow(ax, (0.75, yt - 0.5), (8.9, yt - 0.65), connectionstyle="arc3,rad=0.33", color="tab:red", ls="--")
    ax.text(4.9, 2.25, "test fill only: the input leaks into the hidden cells", color="tab:red", fontsize=8,
            ha="center")
    yb = 1.2  # bottom row: scoring
    boxes = [
        (1.0, 3.0, f"frozen extractor $f$\non $x$ and $\\hat x$ (cfg: {cfg.feature_extractor})"
         if cfg is not None else "frozen extractor $f$\non $x$ and $\\hat x$", "#e8daef"),
        (4.6, 3.2, "feature map\n$1-\\cos(f_l(x), f_l(\\hat x))$, mean over layers", "#fadbd8"),
        (8.4, 3.4, f"average over cutout sizes {sizes},\nsmooth, standardise per pixel*", "#fdebd0"),
        (12.4, 2.6, "image score\n= max of the map", "#d6eaf8"),
    ]
    _arrow(ax, (15.6, yt - 0.65), (2.5, yb + 0.55), connectionstyle="arc3,rad=-0.08")
    for i, (x, w, text, fc) in enumerate(boxes):
        _box(ax, x, yb - 0.5, w, 1.0, text, fc)
        if i:
            prev = boxes[i - 1]
            _arrow(ax, (prev[0] + prev[1] + 0.05, yb), (x - 0.05, yb))
    ax.text(8.5, 0.15, "U-Nets: c = conv-BN-ReLU, B = feature extraction block, dotted = skip concatenation, "
            "numbers = channels.   * standardising with train/good statistics is the project's addition "
            "(cfg.map_normalization), not the paper's", fontsize=8, ha="center", color="dimgrey")
    ax.set_title("ESAD, the whole network: training uses the top row with the train fill and the losses; "
                 "testing repeats it for every cutout size and scores with the bottom row", fontsize=9)


# the explorer's logic (notebook 09), testable headless
def widget_frontend_available(shell: Any = None) -> bool:
    """True when ipywidgets is importable and a person's front end is attached: interactive front
    ends send ``allow_stdin=True`` (``kernel._allow_stdin``); nbclient does not."""
    try:
        import ipywidgets  # noqa: F401, PLC0415 -- optional at run time
        from IPython import get_ipython  # noqa: PLC0415
    except ImportError:
        return False
    kernel = getattr(shell if shell is not None else get_ipython(), "kernel", None)
    return kernel is not None and bool(getattr(kernel, "_allow_stdin", False))


class SettingCache:
    """Compute a value once per setting: ``cache.get(key, compute)``; ``calls`` counts the misses."""

    def __init__(self) -> None:
        self._store: dict[Hashable, Any] = {}
        self.calls = 0

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if key not in self._store:
            self.calls += 1
            self._store[key] = compute()
        return self._store[key]

    def __len__(self) -> int:
        return len(self._store)


def set_slider_range(slider: Any, lo: float, hi: float, value: float | None = None) -> None:
    """Move a slider's range to [lo, hi] (value clipped into it) never passing through min > max."""
    lo, hi = float(lo), float(hi)
    if hi < lo:
        raise ValueError(f"set_slider_range: lo={lo} > hi={hi}")
    if lo > slider.max:  # range moves up: widen upwards first
        slider.max, slider.min = hi, lo
    else:
        slider.min, slider.max = lo, hi
    if value is not None:
        slider.value = min(max(float(value), lo), hi)

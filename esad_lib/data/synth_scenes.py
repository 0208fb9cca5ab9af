"""The five scenes of the synthetic LOCO-like benchmark, one per MVTec LOCO AD category (kept in one
file: the renderers are parallel and read side by side; primitives in ``synth_draw``, writer in ``synth``).

Each scene has the rules LOCO's logical anomalies break (counts, pairings, positions, colours, a fill
level) and objects that carry structural anomalies.  ``render(cv, rng, defect)`` draws one image
(``defect``: None, a logical defect or a *specific* structural one) and returns (defect regions: one
bool canvas-size array per mask PNG, named object regions where ``CategorySpec.generic`` places the
generic scratch / contamination / hole).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from esad_lib.data.synth_draw import (
    Canvas,
    Frame,
    blob,
    draw_chip,
    ellipse,
    hexagon,
    jitter_colour,
    rect,
    rotate,
    rrect,
    sample_point,
)

Regions = dict[str, np.ndarray]


@dataclass(frozen=True)
class DefectDef:
    """A defect type: ``threshold`` is a fraction of the region (relative) or of the IMAGE area."""

    name: str
    threshold: float
    relative: bool = True


@dataclass(frozen=True)
class CategorySpec:
    name: str
    official_size: tuple[int, int]  # (W, H) of the real LOCO images
    background: tuple[int, int, int]
    logical: tuple[DefectDef, ...]
    structural: tuple[DefectDef, ...]
    #: structural defect name -> (generic kind, named region it is drawn on)
    generic: dict[str, tuple[str, str]]
    render: Callable


def _layer_of(cv: Canvas, pts) -> np.ndarray:
    lay = cv.layer()
    ImageDraw.Draw(lay).polygon([tuple(p) for p in pts], fill=255)
    return cv.to_bool(lay)


def _scene_frame(cv: Canvas, rng: np.random.Generator, shift: float, angle: float) -> Frame:
    x, y = cv.W / 2 + rng.uniform(-shift, shift) * cv.W, cv.H / 2 + rng.uniform(-shift, shift) * cv.H
    return Frame(x, y, rng.uniform(-angle, angle))


# ---- breakfast box -----------------------------------------------------------------------
def _fruit(cv: Canvas, f: Frame, rng, x: float, y: float, r: float, kind: str) -> np.ndarray:
    if kind == "tangerine":
        base = jitter_colour(rng, (236, 128, 28), 12)
        shape = ellipse(x, y, r, r * rng.uniform(0.9, 1.0), rng.uniform(0, 180))
        cv.poly(f(shape), base)
        cv.poly(f(ellipse(x - 0.3 * r, y - 0.3 * r, 0.35 * r, 0.3 * r)), (250, 175, 80), alpha=150)
        cv.poly(f(ellipse(x + 0.1 * r, y - 0.05 * r, 0.08 * r, 0.08 * r)), (70, 90, 30))
    else:  # nectarine: red with a yellow cheek
        shape = ellipse(x, y, r, r * rng.uniform(0.92, 1.0), rng.uniform(0, 180))
        cv.poly(f(shape), jitter_colour(rng, (185, 45, 40), 12))
        a = rng.uniform(0, 2 * math.pi)
        cheek = ellipse(x + 0.35 * r * math.cos(a), y + 0.35 * r * math.sin(a), 0.5 * r, 0.4 * r)
        cv.poly(f(cheek), (225, 165, 60), alpha=170)
    return _layer_of(cv, f(shape))


def render_breakfast_box(cv: Canvas, rng: np.random.Generator, defect: str | None):
    W, H = cv.W, cv.H
    f = _scene_frame(cv, rng, 0.015, 2.5)
    out: list[np.ndarray] = []
    box = rrect(0, 0, 0.88 * W, 0.86 * H, 0.05 * H)
    cv.poly(f(box), jitter_colour(rng, (226, 222, 214), 5))
    comp_l = rrect(-0.215 * W, 0, 0.41 * W, 0.78 * H, 0.03 * H)
    comp_r = rrect(0.215 * W, 0, 0.41 * W, 0.78 * H, 0.03 * H)
    floor = jitter_colour(rng, (206, 202, 193), 5)
    cv.poly(f(comp_l), floor)
    cv.poly(f(comp_r), floor)
    regions: Regions = {"box": _layer_of(cv, f(box)), "right": _layer_of(cv, f(comp_r))}
    # right compartment: cereal on top, banana chips below (boundary jitters)
    b = rng.uniform(-0.05, 0.08) * H
    cereal = rect(0.215 * W, (-0.39 * H + b) / 2, 0.39 * W, 0.39 * H + b)
    cv.poly(f(cereal), jitter_colour(rng, (168, 118, 62), 8))
    cx0, cy0 = 0.215 * W, (-0.39 * H + b) / 2
    for _ in range(int(70 * (0.39 * H + b) / (0.39 * H))):
        x = cx0 + rng.uniform(-0.185, 0.185) * W
        y = cy0 + rng.uniform(-0.48, 0.48) * (0.39 * H + b)
        flake = ellipse(x, y, 0.012 * W, 0.008 * W, rng.uniform(0, 180), n=8)
        cv.poly(f(flake), jitter_colour(rng, (130, 85, 40), 35))
    chips_area = rect(0.215 * W, (b + 0.39 * H) / 2, 0.39 * W, 0.39 * H - b)
    if defect == "missing_banana_chips":
        out.append(_layer_of(cv, f(chips_area)))
    else:
        for _ in range(16):
            x = 0.215 * W + rng.uniform(-0.16, 0.16) * W
            y = (b + 0.39 * H) / 2 + rng.uniform(-0.4, 0.4) * (0.39 * H - b)
            cv.poly(f(ellipse(x, y, 0.03 * W, 0.028 * W, n=16)), (200, 180, 110))
            cv.poly(f(ellipse(x, y, 0.025 * W, 0.023 * W, n=16)), jitter_colour(rng, (240, 226, 160), 10))
    # left compartment: two tangerines and one nectarine
    r = 0.085 * W
    slots = [(-0.31 * W, -0.2 * H, "tangerine"), (-0.31 * W, 0.2 * H, "tangerine")]
    slots.append((-0.12 * W, 0.0, "nectarine"))
    slots = [(x + rng.uniform(-0.015, 0.015) * W, y + rng.uniform(-0.02, 0.02) * H, k) for x, y, k in slots]
    if defect == "missing_fruit":
        i = int(rng.integers(3))
        x, y, _ = slots.pop(i)
        out.append(_layer_of(cv, f(ellipse(x, y, r, r))))
    if defect == "fruit_in_cereal_compartment":
        i = int(rng.integers(2))
        x, y, _ = slots.pop(i)
        out.append(_layer_of(cv, f(ellipse(x, y, r, r))))  # the empty slot
        x = 0.215 * W + rng.uniform(-0.08, 0.08) * W
        out.append(_fruit(cv, f, rng, x, (-0.39 * H + b) / 2, r, "tangerine"))
    fruit = np.zeros((H, W), bool)
    for x, y, k in slots:
        fruit |= _fruit(cv, f, rng, x, y, r, k)
    if defect == "extra_fruit":
        y = rng.choice([-0.27, 0.27]) * H
        out.append(_fruit(cv, f, rng, -0.11 * W, y, r * 0.95, "tangerine"))
    regions["fruit"] = fruit
    if defect == "bruised_fruit":
        x, y = sample_point(rng, fruit)
        bruise = _layer_of(cv, blob(rng, x, y, r * rng.uniform(0.25, 0.45))) & fruit
        src = Image.new("RGB", cv.img.size, jitter_colour(rng, (110, 60, 25), 15))
        cv.img.paste(src, (0, 0), Image.fromarray((bruise * rng.uniform(140, 220)).astype(np.uint8)))
        out.append(bruise)
    return out, regions


BREAKFAST_BOX = CategorySpec(
    "breakfast_box", (1600, 1280), (62, 62, 64), render=render_breakfast_box,
    logical=(DefectDef("missing_fruit", 0.5), DefectDef("extra_fruit", 1.0),
             DefectDef("missing_banana_chips", 0.01, relative=False),
             DefectDef("fruit_in_cereal_compartment", 0.5)),
    structural=(DefectDef("box_scratch", 1.0), DefectDef("box_hole", 1.0), DefectDef("contamination", 1.0),
                DefectDef("bruised_fruit", 1.0)),
    generic={"box_scratch": ("scratch", "box"), "box_hole": ("hole", "box"),
             "contamination": ("contamination", "right")})


# ---- juice bottle ------------------------------------------------------------------------
JUICES = {"orange": (238, 148, 30), "cherry": (140, 22, 38), "banana": (232, 222, 168)}


def _bottle_outline(W: float, H: float) -> np.ndarray:
    bw, nw = 0.31 * W, 0.14 * W
    ys = (0.45 * H, -0.20 * H, -0.30 * H, -0.41 * H)
    return np.array([(-bw, ys[0]), (-bw, ys[1]), (-nw, ys[2]), (-nw, ys[3]),
                     (nw, ys[3]), (nw, ys[2]), (bw, ys[1]), (bw, ys[0])])


def _icon(cv: Canvas, f: Frame, kind: str, x: float, y: float, r: float) -> np.ndarray:
    pts = ellipse(x, y, r * 1.1, r * 1.1)
    if kind == "orange":
        cv.poly(f(ellipse(x, y, r, r)), JUICES["orange"])
        cv.poly(f(ellipse(x, y - r, 0.25 * r, 0.15 * r)), (60, 120, 40))
    elif kind == "cherry":
        cv.poly(f(ellipse(x - 0.45 * r, y + 0.3 * r, 0.5 * r, 0.5 * r)), (170, 20, 40))
        cv.poly(f(ellipse(x + 0.45 * r, y + 0.3 * r, 0.5 * r, 0.5 * r)), (170, 20, 40))
        cv.line(f(np.array([(x - 0.45 * r, y), (x, y - r), (x + 0.45 * r, y)])), (60, 110, 40), 0.12 * r)
    else:
        cv.poly(f(ellipse(x, y, r, 0.4 * r, -25)), (235, 205, 60))
    return _layer_of(cv, f(pts))


def render_juice_bottle(cv: Canvas, rng: np.random.Generator, defect: str | None):
    W, H = cv.W, cv.H
    f = _scene_frame(cv, rng, 0.012, 1.5)
    out: list[np.ndarray] = []
    outline = _bottle_outline(W, H)
    cv.poly(f(outline), jitter_colour(rng, (78, 82, 88), 5))
    bottle = _layer_of(cv, f(outline))
    juice = list(JUICES)[int(rng.integers(3))]
    level = -0.17 * H + rng.uniform(-0.006, 0.006) * H
    liquid_top = level
    if defect == "wrong_fill_level":
        liquid_top = level + (rng.uniform(0.08, 0.14) if rng.random() < 0.6 else -rng.uniform(0.06, 0.1)) * H
    liquid = _layer_of(cv, f(rect(0, 0.5 * H, 2 * W, 2 * (0.5 * H - liquid_top)))) & bottle
    src = Image.new("RGB", cv.img.size, jitter_colour(rng, JUICES[juice], 8))
    cv.img.paste(src, (0, 0), Image.fromarray(liquid.astype(np.uint8) * 255))
    if defect == "wrong_fill_level":
        lo, hi = sorted((level, liquid_top))
        out.append(_layer_of(cv, f(rect(0, (lo + hi) / 2, 2 * W, hi - lo))) & bottle)
    cap = rect(0, -0.425 * H, 0.33 * W, 0.05 * H)
    cv.poly(f(cap), jitter_colour(rng, (196, 196, 202), 6))
    cv.poly(f(rect(0, -0.41 * H, 0.33 * W, 0.012 * H)), (150, 150, 158))
    regions: Regions = {"cap": _layer_of(cv, f(cap)), "liquid": liquid}
    # main label with the fruit icon of the juice; small label below
    ly = 0.06 * H + rng.uniform(-0.006, 0.006) * H
    lang = 0.0
    if defect == "label_misplaced":
        old = _layer_of(cv, f(rect(0, ly, 0.62 * W, 0.2 * H)))
        ly += rng.choice([-1, 1]) * rng.uniform(0.06, 0.1) * H
        lang = rng.uniform(-6, 6)
    label = rect(0, ly, 0.62 * W, 0.2 * H, lang)
    cv.poly(f(label), jitter_colour(rng, (236, 234, 226), 4))
    label_m = _layer_of(cv, f(label))
    if defect == "label_misplaced":
        out.append(old | label_m)
    icon = juice
    if defect == "wrong_label_icon":
        icon = [k for k in JUICES if k != juice][int(rng.integers(2))]
    icon_m = _icon(cv, f, icon, rng.uniform(-0.02, 0.02) * W, ly, 0.11 * W)
    if defect == "wrong_label_icon":
        out.append(icon_m)
    small = rect(0, 0.34 * H + rng.uniform(-0.005, 0.005) * H, 0.5 * W, 0.07 * H)
    if defect == "missing_bottom_label":
        out.append(_layer_of(cv, f(small)))
        small_m = np.zeros_like(label_m)
    else:
        cv.poly(f(small), (232, 230, 222))
        for k in range(3):
            yy = 0.34 * H - 0.02 * H + k * 0.02 * H
            cv.line(f(np.array([(-0.2 * W, yy), (rng.uniform(0.0, 0.2) * W, yy)])), (90, 90, 90), 0.006 * H)
        small_m = _layer_of(cv, f(small))
    regions["labels"] = label_m | small_m
    # glass highlight
    cv.poly(f(rect(-0.22 * W, 0.1 * H, 0.035 * W, 0.6 * H)), (255, 255, 255), alpha=45)
    if defect == "damaged_label":
        out.append(draw_chip(cv, rng, label_m, (80, 75, 70), 0.09 * W))
    if defect == "broken_cap":
        out.append(draw_chip(cv, rng, regions["cap"], (40, 40, 46), 0.07 * W))
    return out, regions


JUICE_BOTTLE = CategorySpec(
    "juice_bottle", (800, 1600), (38, 38, 44), render=render_juice_bottle,
    logical=(DefectDef("wrong_fill_level", 0.5), DefectDef("wrong_label_icon", 1.0),
             DefectDef("missing_bottom_label", 1.0), DefectDef("label_misplaced", 0.5)),
    structural=(DefectDef("label_scratch", 1.0), DefectDef("contamination", 1.0),
                DefectDef("damaged_label", 1.0), DefectDef("broken_cap", 1.0)),
    generic={"label_scratch": ("scratch", "labels"), "contamination": ("contamination", "liquid")})


# ---- pushpins ----------------------------------------------------------------------------
def _pushpin(cv: Canvas, f: Frame, rng, x: float, y: float, r: float, colour, bent: bool = False):
    """Top view of a pushpin: needle (a short grey line) under a round head.

    Returns (head, needle, (x, y, angle)); a bent needle's region includes the straight one it replaces."""
    a = rng.uniform(0, 2 * math.pi)
    nl = 1.6 * r
    pts = [(x, y), (x + nl * math.cos(a), y + nl * math.sin(a))]
    if bent:
        k = rng.uniform(0.35, 0.6)
        mx, my = x + k * nl * math.cos(a), y + k * nl * math.sin(a)
        b = a + rng.choice([-1, 1]) * rng.uniform(0.7, 1.3)
        tip = (mx + (1 - k) * nl * 0.7 * math.cos(b), my + (1 - k) * nl * 0.7 * math.sin(b))
        pts = [(x, y), (mx, my), tip]
    needle_lay = cv.layer()
    if bent:  # the straight needle that should be there belongs to the defect region too
        straight = [(x, y), (x + nl * math.cos(a), y + nl * math.sin(a))]
        ImageDraw.Draw(needle_lay).line(f(np.array(straight)), fill=255, width=max(1, round(0.18 * r)))
    cv.line(f(np.array(pts)), (165, 168, 172), 0.18 * r, layers=[needle_lay])
    head = ellipse(x, y, r, r)
    cv.poly(f(head), tuple(int(c * 0.75) for c in colour))
    cv.poly(f(ellipse(x, y, 0.8 * r, 0.8 * r)), colour)
    cv.poly(f(ellipse(x - 0.3 * r, y - 0.3 * r, 0.22 * r, 0.18 * r)), (255, 255, 235), alpha=160)
    return _layer_of(cv, f(head)), cv.to_bool(needle_lay), (x, y, a)


def render_pushpins(cv: Canvas, rng: np.random.Generator, defect: str | None):
    W, H = cv.W, cv.H
    f = _scene_frame(cv, rng, 0.01, 1.5)
    out: list[np.ndarray] = []
    bw, bh = 0.93 * W, 0.88 * H
    box = rect(0, 0, bw, bh)
    cv.poly(f(box), jitter_colour(rng, (96, 101, 108), 5))
    regions: Regions = {"box": _layer_of(cv, f(box))}
    cols, rows = 5, 3
    cw, ch = bw / cols, bh / rows
    sep_col = (158, 162, 168)
    sw = 0.018 * H
    seps = [("v", i) for i in range(1, cols)] + [("h", j) for j in range(1, rows)]
    missing_sep = seps[int(rng.integers(len(seps)))] if defect == "missing_separator" else None
    for kind, i in seps:
        if kind == "v":
            seg = rect(-bw / 2 + i * cw, 0, sw, bh)
        else:
            seg = rect(0, -bh / 2 + i * ch, bw, sw)
        if (kind, i) == missing_sep:
            out.append(_layer_of(cv, f(seg)))
            continue
        cv.poly(f(seg), sep_col)
    r = 0.075 * H
    cells = [(c, rw) for rw in range(rows) for c in range(cols)]
    special = int(rng.integers(len(cells)))
    heads = np.zeros((H, W), bool)
    yellow = (226, 194, 42)
    for idx, (c, rw) in enumerate(cells):
        cx, cy = -bw / 2 + (c + 0.5) * cw, -bh / 2 + (rw + 0.5) * ch
        x, y = cx + rng.uniform(-0.22, 0.22) * cw, cy + rng.uniform(-0.18, 0.18) * ch
        if idx == special and defect == "missing_pushpin":
            out.append(_layer_of(cv, f(rect(cx, cy, cw - sw, ch - sw))))
            continue
        colour = jitter_colour(rng, yellow, 8)
        if idx == special and defect == "wrong_colour_pushpin":
            colour = [(40, 90, 200), (200, 40, 40), (60, 160, 70)][int(rng.integers(3))]
        bent = idx == special and defect == "broken_needle"
        hm, nm, _ = _pushpin(cv, f, rng, x, y, r, colour, bent=bent)
        heads |= hm
        if idx == special and defect == "wrong_colour_pushpin":
            out.append(hm)
        if bent:
            out.append(nm & ~hm)
        if idx == special and defect == "additional_pushpin":
            ex = cx - np.sign(x - cx + 1e-9) * 0.22 * cw
            ey = cy - np.sign(y - cy + 1e-9) * 0.15 * ch
            h2, n2, _ = _pushpin(cv, f, rng, ex, ey, r, jitter_colour(rng, yellow, 8))
            out.append(h2 | n2)
    regions["heads"] = heads
    regions["floor"] = regions["box"] & ~heads
    if defect == "chipped_head":
        idx = int(rng.integers(len(cells)))
        c, rw = cells[idx]
        cx, cy = -bw / 2 + (c + 0.5) * cw, -bh / 2 + (rw + 0.5) * ch
        one = heads & _layer_of(cv, f(rect(cx, cy, cw, ch)))
        if not one.any():
            one = heads
        out.append(draw_chip(cv, rng, one, (96, 101, 108), 0.5 * r))
    return out, regions


PUSHPINS = CategorySpec(
    "pushpins", (1700, 1000), (44, 44, 50), render=render_pushpins,
    logical=(DefectDef("missing_pushpin", 0.008, relative=False), DefectDef("additional_pushpin", 1.0),
             DefectDef("missing_separator", 1.0), DefectDef("wrong_colour_pushpin", 1.0)),
    structural=(DefectDef("broken_needle", 1.0), DefectDef("chipped_head", 1.0),
                DefectDef("box_scratch", 1.0), DefectDef("contamination", 1.0)),
    generic={"box_scratch": ("scratch", "floor"), "contamination": ("contamination", "box")})


# ---- screw bag ---------------------------------------------------------------------------
METAL = (128, 130, 134)


def _screw(cv: Canvas, f: Frame, x, y, length, width, angle, bend: float = 0.0) -> np.ndarray:
    lay = cv.layer()
    head = rect(x - length / 2, y, 0.08 * length + 0.5 * width, 2.0 * width, 0)
    d = np.array([(x - length / 2, y), (x + length / 2, y)])
    if bend:
        mid = x + 0.1 * length
        a = math.radians(bend)
        tip = (mid + 0.4 * length * math.cos(a), y + 0.4 * length * math.sin(a))
        d = np.array([(x - length / 2, y), (mid, y), tip])
    c = np.array([x, y])
    dd = rotate(d - c, angle) + c
    hh = rotate(head - c, angle) + c
    cv.line(f(dd), METAL, width, layers=[lay])
    # thread: darker ticks along the shaft
    for t in np.linspace(0.15, 0.95, 9):
        seg = int(t * (len(dd) - 1) // 1)
        seg = min(seg, len(dd) - 2)
        u = t * (len(dd) - 1) - seg
        p = dd[seg] + u * (dd[seg + 1] - dd[seg])
        cv.poly(f(ellipse(p[0], p[1], 0.12 * width, 0.45 * width, angle)), (88, 90, 94))
    cv.poly(f(hh), (150, 152, 156), layers=[lay])
    return cv.to_bool(lay)


def _nut(cv: Canvas, f: Frame, x, y, r, angle, under) -> np.ndarray:
    cv.poly(f(hexagon(x, y, r, angle)), METAL)
    cv.poly(f(ellipse(x, y, 0.75 * r, 0.75 * r)), (150, 152, 156), alpha=120)
    cv.poly(f(ellipse(x, y, 0.42 * r, 0.42 * r)), under)
    return _layer_of(cv, f(hexagon(x, y, r, angle)))


def _washer(cv: Canvas, f: Frame, x, y, r, under) -> np.ndarray:
    cv.poly(f(ellipse(x, y, r, r)), (160, 162, 166))
    cv.poly(f(ellipse(x, y, 0.8 * r, 0.8 * r)), (140, 142, 146))
    cv.poly(f(ellipse(x, y, 0.45 * r, 0.45 * r)), under)
    return _layer_of(cv, f(ellipse(x, y, r, r)))


def render_screw_bag(cv: Canvas, rng: np.random.Generator, defect: str | None):
    W, H = cv.W, cv.H
    f = _scene_frame(cv, rng, 0.02, 3.0)
    out: list[np.ndarray] = []
    bag = blob(rng, 0, 0, 1.0, irregular=0.05, n=40) * (0.44 * W, 0.42 * H)
    bag_col = jitter_colour(rng, (214, 216, 219), 4)
    cv.poly(f(bag), bag_col)
    bag_m = _layer_of(cv, f(bag))
    for _ in range(5):  # wrinkles
        x0, y0 = rng.uniform(-0.35, 0.35) * W, rng.uniform(-0.3, 0.3) * H
        a = rng.uniform(0, math.pi)
        L = rng.uniform(0.1, 0.25) * W
        wrinkle = np.array([(x0, y0), (x0 + L * math.cos(a), y0 + L * math.sin(a))])
        cv.line(f(wrinkle), (250, 250, 252), 0.01 * H, alpha=110)
    u = H
    items = ["long", "short", "nut", "nut", "washer", "washer"]
    radius = {"long": 0.24 * u, "short": 0.16 * u, "nut": 0.085 * u, "washer": 0.09 * u}
    missing = None
    if defect == "missing_item":
        missing = items.pop(2 + int(rng.integers(4)))
    if defect == "wrong_screw_length":
        items[1] = "long"
    wrong_idx = 1 if defect == "wrong_screw_length" else -1
    if defect == "additional_item":
        items.append(["nut", "washer"][int(rng.integers(2))])
    placed: list[tuple[float, float, float]] = []
    metal = np.zeros((H, W), bool)
    washers = np.zeros((H, W), bool)
    for i, it in enumerate(items):
        rr = radius[it]
        for _ in range(300):
            x = rng.uniform(-0.4 * W + rr, 0.4 * W - rr)
            y = rng.uniform(-0.36 * H + rr * 0.5, 0.36 * H - rr * 0.5)
            if all((x - px) ** 2 + (y - py) ** 2 > (rr + pr) ** 2 for px, py, pr in placed):
                break
        placed.append((x, y, rr))
        ang = rng.uniform(0, 360)
        if it in ("long", "short"):
            length = (0.44 if it == "long" else 0.28) * u
            bent = defect == "bent_screw" and it == "long"
            bend = rng.choice([-1, 1]) * rng.uniform(18, 35) if bent else 0.0
            length *= 0.95 if bent else 1.0  # keep the bent screw inside its own circle
            m = _screw(cv, f, x, y, length, 0.05 * u, ang, bend)
            if bend or i == wrong_idx:
                out.append(m)
        elif it == "nut":
            m = _nut(cv, f, x, y, 0.075 * u, ang, bag_col)
        else:
            m = _washer(cv, f, x, y, 0.08 * u, bag_col)
            washers |= m
        metal |= m
        if defect == "additional_item" and i == len(items) - 1:
            out.append(m)
    if missing is not None:
        out.append(bag_m)
    regions: Regions = {"bag": bag_m & ~metal, "metal": metal}
    if defect == "damaged_washer":
        out.append(draw_chip(cv, rng, washers, bag_col, 0.035 * u))
    return out, regions


SCREW_BAG = CategorySpec(
    "screw_bag", (1600, 1100), (176, 178, 182), render=render_screw_bag,
    logical=(DefectDef("missing_item", 0.015, relative=False), DefectDef("additional_item", 1.0),
             DefectDef("wrong_screw_length", 0.5)),
    structural=(DefectDef("bent_screw", 0.5), DefectDef("bag_tear", 1.0), DefectDef("contamination", 1.0),
                DefectDef("damaged_washer", 1.0)),
    generic={"bag_tear": ("hole", "bag"), "contamination": ("contamination", "bag")})


# ---- splicing connectors -----------------------------------------------------------------
CABLE_COLOURS = {2: (228, 198, 40), 3: (40, 92, 200), 5: (200, 42, 42)}


def _connector(cv: Canvas, f: Frame, x, y, n, side, slot_h, bw):
    """Connector with ``n`` clamps; levers on the outer side. Returns (body, levers, slot ys)."""
    h = n * slot_h + 0.04 * cv.H
    body = rect(x, y, bw, h)
    cv.poly(f(body), (150, 152, 158))
    levers = np.zeros((cv.H, cv.W), bool)
    ys = [y - n * slot_h / 2 + (k + 0.5) * slot_h for k in range(n)]
    for yy in ys:
        lv = rect(x - side * 0.22 * bw, yy, 0.5 * bw, 0.72 * slot_h)
        cv.poly(f(lv), (236, 122, 30))
        levers |= _layer_of(cv, f(lv))
        cv.poly(f(rect(x + side * 0.38 * bw, yy, 0.18 * bw, 0.4 * slot_h)), (55, 55, 60))
    return _layer_of(cv, f(body)), levers, ys


def _bezier(p0, p1, p2, n=24) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * np.array(p1) + t**2 * np.array(p2)


def render_splicing_connectors(cv: Canvas, rng: np.random.Generator, defect: str | None):
    W, H = cv.W, cv.H
    f = _scene_frame(cv, rng, 0.015, 2.0)
    out: list[np.ndarray] = []
    n = [2, 3, 5][int(rng.integers(3))]
    n_right = n
    if defect == "mismatched_connectors":
        n_right = [k for k in (2, 3, 5) if k != n][int(rng.integers(2))]
    slot_h, bw = 0.13 * H, 0.16 * W
    yl, yr = rng.uniform(-0.06, 0.06) * H, rng.uniform(-0.06, 0.06) * H
    xl, xr = -0.33 * W + rng.uniform(-0.02, 0.02) * W, 0.33 * W + rng.uniform(-0.02, 0.02) * W
    body_l, lev_l, ys_l = _connector(cv, f, xl, yl, n, -1, slot_h, bw)
    body_r, lev_r, ys_r = _connector(cv, f, xr, yr, n_right, 1, slot_h, bw)
    if defect == "mismatched_connectors":
        out.append(body_r)
    k = int(rng.integers(n))
    kr = min(k, n_right - 1)
    if defect == "wrong_slot":
        kr = [j for j in range(n_right) if j != kr][int(rng.integers(n_right - 1))]
    p0 = (xl + 0.5 * bw, ys_l[k])
    p2 = (xr - 0.5 * bw, ys_r[kr])
    p1 = (0.0, (p0[1] + p2[1]) / 2 + rng.uniform(-0.3, 0.3) * H)
    path = _bezier((p0[0] - 0.3 * bw, p0[1]), p1, (p2[0] + 0.3 * bw, p2[1]))
    colour = CABLE_COLOURS[n]
    if defect == "wrong_cable_colour":
        colour = CABLE_COLOURS[[c for c in CABLE_COLOURS if c != n][int(rng.integers(2))]]
    width = 0.05 * H
    cable_lay = cv.layer()
    if defect == "missing_cable":
        ImageDraw.Draw(cable_lay).line([tuple(p) for p in f(path)], fill=255, width=int(width), joint="curve")
        out.append(cv.to_bool(cable_lay))
    else:
        cv.line(f(path), jitter_colour(rng, colour, 10), width, layers=[cable_lay])
        cv.line(f(path + (0, -0.25 * width)), (255, 255, 255), 0.2 * width, alpha=70)
    cable = cv.to_bool(cable_lay)
    if defect in ("wrong_cable_colour", "wrong_slot"):
        out.append(cable)
    if defect == "broken_cable":
        i = int(rng.integers(6, len(path) - 6))
        gap = path[i - 2 : i + 2]
        lay = cv.layer()
        cv.line(f(gap), (175, 172, 165), width * 1.3, layers=[lay])
        for s in (gap[0], gap[-1]):  # frayed copper ends
            for _ in range(3):
                a = rng.uniform(0, 2 * math.pi)
                e = (s[0] + 0.6 * width * math.cos(a), s[1] + 0.6 * width * math.sin(a))
                cv.line(f(np.array([s, e])), (196, 120, 60), 0.15 * width, layers=[lay])
        out.append(cv.to_bool(lay))
    regions: Regions = {"connectors": (body_l | body_r) & ~(lev_l | lev_r) & ~cable, "cable": cable}
    if defect == "broken_lever":
        out.append(draw_chip(cv, rng, lev_l | lev_r, (150, 152, 158), 0.06 * H))
    return out, regions


SPLICING_CONNECTORS = CategorySpec(
    "splicing_connectors", (1700, 850), (178, 176, 170), render=render_splicing_connectors,
    logical=(DefectDef("mismatched_connectors", 0.5), DefectDef("wrong_cable_colour", 0.5),
             DefectDef("wrong_slot", 0.5), DefectDef("missing_cable", 0.006, relative=False)),
    structural=(DefectDef("broken_cable", 1.0), DefectDef("broken_lever", 1.0),
                DefectDef("connector_scratch", 1.0), DefectDef("contamination", 1.0)),
    generic={"connector_scratch": ("scratch", "connectors"), "contamination": ("contamination", "cable")})

SCENES: dict[str, CategorySpec] = {
    s.name: s for s in (BREAKFAST_BOX, JUICE_BOTTLE, PUSHPINS, SCREW_BAG, SPLICING_CONNECTORS)
}

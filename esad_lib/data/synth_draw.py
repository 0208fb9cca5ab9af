"""Drawing primitives of the synthetic LOCO-like benchmark (a stand-in for MVTec LOCO AD, the paper's
benchmark, which cannot be shipped).

Polygons in a per-image shifted and rotated object frame are drawn with ``PIL.ImageDraw`` on a
canvas ``SS`` times the output size (antialiased by the final downsampling); defect regions go into
``L`` layers downsampled by majority vote, so every mask matches what was painted.  ``Canvas.finish``
adds a camera's lighting gradient, low-frequency texture and sensor noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

#: supersampling factor of the drawing canvas.
SS = 2

Colour = tuple[int, int, int]


def jitter_colour(rng: np.random.Generator, c: Sequence[int], amount: float) -> Colour:
    """``c`` with each channel moved by up to +-amount (clipped to 0..255)."""
    return tuple(int(np.clip(v + rng.uniform(-amount, amount), 0, 255)) for v in c)  # type: ignore[return-value]


# ---- shapes in local coordinates (numpy [n, 2] arrays of x, y) ---------------------------
def ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 36) -> np.ndarray:
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    pts = np.stack([rx * np.cos(t), ry * np.sin(t)], 1)
    return rotate(pts, angle) + (cx, cy)


def rect(cx: float, cy: float, w: float, h: float, angle: float = 0.0) -> np.ndarray:
    pts = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    return rotate(pts, angle) + (cx, cy)


def rrect(cx: float, cy: float, w: float, h: float, r: float, angle: float = 0.0, n: int = 6) -> np.ndarray:
    """Rounded rectangle (corner radius ``r``)."""
    r = min(r, w / 2, h / 2)
    pts = []
    for (sx, sy), a0 in zip(((1, 1), (-1, 1), (-1, -1), (1, -1)), (0, 90, 180, 270)):
        ccx, ccy = sx * (w / 2 - r), sy * (h / 2 - r)
        for k in range(n + 1):
            a = math.radians(a0 + 90 * k / n)
            pts.append((ccx + r * math.cos(a), ccy + r * math.sin(a)))
    return rotate(np.array(pts), angle) + (cx, cy)


def blob(rng: np.random.Generator, cx: float, cy: float, r: float, irregular: float = 0.35, n: int = 20):
    """An irregular closed shape of mean radius ``r`` (smooth random radial profile)."""
    t = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    k = np.arange(1, 4)[:, None]
    coef = rng.normal(0, irregular / 2, size=(3, 2))
    prof = 1 + (coef[:, :1] * np.cos(k * t) + coef[:, 1:] * np.sin(k * t)).sum(0)
    prof = np.clip(prof * (1 + rng.uniform(-irregular / 3, irregular / 3, n)), 0.35, 1.8)
    return np.stack([cx + r * prof * np.cos(t), cy + r * prof * np.sin(t)], 1)


def hexagon(cx: float, cy: float, r: float, angle: float = 0.0) -> np.ndarray:
    return ellipse(cx, cy, r, r, angle, n=6)


def rotate(pts: np.ndarray, angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    return np.asarray(pts, dtype=np.float64) @ np.array([[c, s], [-s, c]])


class Frame:
    """Local object frame: local (x, y) -> canvas pixels, rotated by ``angle`` about (cx, cy)."""

    def __init__(self, cx: float, cy: float, angle: float = 0.0) -> None:
        self.cx, self.cy, self.angle = cx, cy, angle

    def __call__(self, pts: np.ndarray) -> list[tuple[float, float]]:
        q = rotate(np.asarray(pts, dtype=np.float64).reshape(-1, 2), self.angle) + (self.cx, self.cy)
        return [(float(x), float(y)) for x, y in q]


class Canvas:
    """An RGB drawing surface ``SS`` times the output size, plus mask layers of the same size."""

    def __init__(self, width: int, height: int, background: Colour) -> None:
        self.width, self.height = width, height
        self.W, self.H = width * SS, height * SS
        self.img = Image.new("RGB", (self.W, self.H), tuple(background))
        self.draw = ImageDraw.Draw(self.img, "RGBA")
        self.unit = float(min(self.W, self.H))

    def layer(self) -> Image.Image:
        """A fresh empty mask layer (mode L, canvas size)."""
        return Image.new("L", (self.W, self.H), 0)

    def poly(self, pts, fill: Colour, alpha: int = 255, layers: Sequence[Image.Image] = ()) -> None:
        pts = [tuple(p) for p in pts]
        self.draw.polygon(pts, fill=(*fill, alpha))
        for lay in layers:
            ImageDraw.Draw(lay).polygon(pts, fill=255)

    def line(self, pts, fill: Colour, width: float, alpha: int = 255, layers: Sequence[Image.Image] = ()):
        pts = [tuple(p) for p in pts]
        w = max(1, int(round(width)))
        self.draw.line(pts, fill=(*fill, alpha), width=w, joint="curve")
        for lay in layers:
            ImageDraw.Draw(lay).line(pts, fill=255, width=w, joint="curve")

    def colour_at(self, x: float, y: float) -> Colour:
        return self.img.getpixel((int(np.clip(x, 0, self.W - 1)), int(np.clip(y, 0, self.H - 1))))[:3]

    # ---- output --------------------------------------------------------------------------
    def finish(self, rng: np.random.Generator, light: float = 0.1, texture: float = 0.03, noise: float = 2.0):
        """Downsample and add camera effects. Returns uint8 [height, width, 3].

        gain(x, y) = b * (1 + light * (gx * x + gy * y)) * (1 + texture * t(x, y)), x, y in [-0.5, 0.5],
        t = bilinearly upsampled N(0, 1) on a coarse grid; then + N(0, noise^2) per pixel.
        """
        a = np.asarray(self.img.reduce(SS), dtype=np.float32)
        h, w = self.height, self.width
        ang = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        grad = (np.cos(ang) * (xs / w - 0.5) + np.sin(ang) * (ys / h - 0.5)).astype(np.float32)
        gain = rng.uniform(0.94, 1.06) * (1 + rng.uniform(0.3, 1.0) * light * 2 * grad)
        coarse = rng.standard_normal((max(2, h // 12), max(2, w // 12))).astype(np.float32)
        tex = np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.BILINEAR), dtype=np.float32)
        gain = gain * (1 + texture * tex)
        a = a * gain[..., None] + rng.normal(0, noise, size=a.shape).astype(np.float32)
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)

    @staticmethod
    def to_bool(layer: Image.Image) -> np.ndarray:
        return np.asarray(layer) > 0

    def downsample_mask(self, m: np.ndarray) -> np.ndarray:
        """bool [H*SS, W*SS] -> bool [H, W]: majority of each SSxSS block, or any if that is empty."""
        blocks = m.reshape(self.height, SS, self.width, SS).mean(axis=(1, 3))
        out = blocks >= 0.5
        return out if out.any() else blocks > 0


# ---- generic structural defects (drawn onto the canvas; each returns its region) ----------
def sample_point(rng: np.random.Generator, region: np.ndarray, edge: bool = False) -> tuple[float, float]:
    """A uniformly random pixel of ``region`` (bool canvas-size array); on its border if ``edge``."""
    if edge:
        lay = Image.fromarray(region.astype(np.uint8) * 255)
        inner = np.asarray(lay.filter(ImageFilter.MinFilter(5))) > 0
        border = region & ~inner
        if border.any():
            region = border
    ys, xs = np.nonzero(region)
    if len(xs) == 0:
        raise ValueError("cannot place a defect: empty region")
    i = int(rng.integers(len(xs)))
    return float(xs[i]), float(ys[i])


def draw_scratch(cv: Canvas, rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """A thin polyline lighter or darker than the surface (length 10-22 % of the short side, width
    2.2-3.5 %: the generic defects are sized to stay visible at the demo's 64-px input)."""
    x, y = sample_point(rng, region)
    length = cv.unit * rng.uniform(0.10, 0.22)
    a = rng.uniform(0, 2 * math.pi)
    pts = [(x, y)]
    for _ in range(3):
        a += rng.normal(0, 0.35)
        x, y = x + length / 3 * math.cos(a), y + length / 3 * math.sin(a)
        pts.append((x, y))
    base = np.array(cv.colour_at(*pts[0]), dtype=float)
    delta = rng.uniform(45, 95) * (1 if base.mean() < 128 else -1)
    col = tuple(int(v) for v in np.clip(base + delta, 0, 255))
    lay = cv.layer()
    width = max(SS, cv.unit * rng.uniform(0.022, 0.035))
    cv.line(pts, col, width=width, alpha=int(rng.uniform(170, 255)), layers=[lay])
    return cv.to_bool(lay)


def draw_contamination(cv: Canvas, rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """A foreign irregular blob (dirt, crumbs, fibres), semi-transparent to opaque."""
    x, y = sample_point(rng, region)
    palette = [(70, 45, 25), (25, 25, 25), (60, 90, 140), (120, 150, 60), (150, 30, 120)]
    col = jitter_colour(rng, palette[int(rng.integers(len(palette)))], 15)
    lay = cv.layer()
    shape = blob(rng, x, y, cv.unit * rng.uniform(0.045, 0.08))
    cv.poly(shape, col, alpha=int(rng.uniform(140, 240)), layers=[lay])
    return cv.to_bool(lay)


def draw_hole(cv: Canvas, rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """A dark puncture with a light rim."""
    x, y = sample_point(rng, region)
    r = cv.unit * rng.uniform(0.035, 0.06)
    lay = cv.layer()
    rim = blob(rng, x, y, r * 1.25, irregular=0.25)
    cv.poly(rim, (225, 222, 210), alpha=int(rng.uniform(120, 200)), layers=[lay])
    cv.poly(blob(rng, x, y, r, irregular=0.25), jitter_colour(rng, (30, 26, 24), 10), layers=[lay])
    return cv.to_bool(lay)


def draw_chip(cv: Canvas, rng: np.random.Generator, part: np.ndarray, fill: Colour,
              size: float) -> np.ndarray:
    """A piece broken off the border of ``part``, painted in ``fill``. Returns its region (blob & part)."""
    x, y = sample_point(rng, part, edge=True)
    lay = cv.layer()
    ImageDraw.Draw(lay).polygon([tuple(p) for p in blob(rng, x, y, size, irregular=0.5)], fill=255)
    piece = cv.to_bool(lay) & part
    if not piece.any():
        return piece
    cv.img.paste(Image.new("RGB", cv.img.size, tuple(fill)), (0, 0),
                 Image.fromarray(piece.astype(np.uint8) * 255))
    return piece


GENERIC_STRUCTURAL = {"scratch": draw_scratch, "contamination": draw_contamination, "hole": draw_hole}

"""The README's figure, drawn by the library the lessons use (``esad_lib.viz``).

Top: ESAD's network as the authors' README "2. Proposed Method" describes it (disjoint masks,
inpainting U-Net, fill, reconstruction U-Net, feature-level anomaly map), with the numbers of the
``paper`` profile.  Below: the built-in synthetic LOCO-like benchmark (seed 0, the test images
``make demo`` reports), one structural and one logical anomaly per category, the ground-truth
defect regions outlined.  Rendering the benchmark takes seconds on first use (under the data
root, ``$ESAD_DATA_ROOT``); nothing is trained.

    python docs/make_figures.py            # writes docs/esad_overview.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from esad_lib.config import CATEGORIES, get_config  # noqa: E402
from esad_lib.data import dataset_root, list_samples, load_channel_masks, load_image, union_mask  # noqa: E402
from esad_lib.viz import draw_esad_network, outline_mask  # noqa: E402

OUT = Path(__file__).resolve().parent / "esad_overview.png"
#: which test image of each anomaly type is shown (the first of its folder)
EXAMPLE_INDEX = 0


def draw_examples(axes_row, root: Path, label: str) -> None:
    """One ``label`` ("structural"/"logical") test image per category, its defect outlined."""
    for ax, category in zip(axes_row, CATEGORIES):
        sample = list_samples(root, category, "test", [label])[EXAMPLE_INDEX]
        ax.imshow(load_image(sample.path))
        outline_mask(ax, union_mask(load_channel_masks(sample)), color="cyan", linewidth=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{category.replace('_', ' ')}: {label}", fontsize=8)


def make_overview(out: Path = OUT, dpi: int = 80) -> Path:
    """Draw and save the overview figure; returns its path."""
    root = dataset_root(get_config("demo"))
    fig = plt.figure(figsize=(12, 8.6))
    grid = fig.add_gridspec(3, len(CATEGORIES), height_ratios=[2.4, 1, 1], hspace=0.25)
    draw_esad_network(fig.add_subplot(grid[0, :]), get_config("paper"))
    for row, label in ((1, "structural"), (2, "logical")):
        draw_examples([fig.add_subplot(grid[row, c]) for c in range(len(CATEGORIES))], root, label)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--dpi", type=int, default=80)
    args = ap.parse_args()
    path = make_overview(args.out, args.dpi)
    print(f"{path} ({path.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()

"""One training run of a given copy of ``esad_lib`` (the worker of ``train_speed.py --against``).

    python benchmarks/trainer_worker.py ROOT --epochs E --threads T [--category C] [--profile P]

``ROOT`` holds the ``esad_lib`` to import: the working tree, or an older commit exported by
``train_speed.py --against REV``.  This file imports nothing of the project before putting
``ROOT`` first on ``sys.path``, so each process runs exactly one version's trainer.  It trains
``esad_lib.training.train`` (that version's own trainer: its data loading, masks, loss,
optimiser, validation) on the preset's config for ``E`` epochs into a temporary run folder and
prints one JSON line: the epoch times from the run's ``log.csv``, the time each epoch's
validation took, the training loss per epoch, the number of training images and the file the
package was imported from.  Only what the versions compared have in common is used:
``PRESETS``, ``train(cfg, out_dir, progress=False)`` and ``read_log`` (``esad_lib.run_io``, or
``esad_lib.training`` in older versions).  To time each epoch's validation and count the
training images, this process wraps ``esad_lib.training``'s module functions
``validation_loss`` and ``_datasets`` in ITS OWN import of that version (no class is touched);
a version without them reports ``null`` for those figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="folder that holds the esad_lib package to import")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--category", default="breakfast_box")
    p.add_argument("--profile", default="demo")
    args = p.parse_args(argv)
    root = os.path.abspath(args.root)
    sys.path.insert(0, root)
    import torch

    torch.set_num_threads(args.threads)
    import esad_lib
    from esad_lib import training
    from esad_lib.config import PRESETS

    seen: dict[str, int] = {}
    val_seconds: list[float] = []
    datasets = getattr(training, "_datasets", None)
    validation_loss = getattr(training, "validation_loss", None)

    def counting_datasets(*a, **k):
        out = datasets(*a, **k)
        seen["train_images"] = len(out[0])
        return out

    def timed_validation(*a, **k):
        t0 = time.perf_counter()
        try:
            return validation_loss(*a, **k)
        finally:
            val_seconds.append(time.perf_counter() - t0)

    if hasattr(training, "_datasets"):
        training._datasets = counting_datasets
    if hasattr(training, "validation_loss"):
        training.validation_loss = timed_validation
    try:
        from esad_lib.run_io import read_log
    except ImportError:  # older versions
        read_log = training.read_log
    cfg = PRESETS[args.profile].replace(category=args.category, epochs=args.epochs, device="cpu")
    with tempfile.TemporaryDirectory(prefix="esad_trainer_worker_") as tmp:
        run = os.path.join(tmp, "run")
        training.train(cfg, run, progress=False)
        log = read_log(run)
    print(
        json.dumps(
            {
                "imported_from": os.path.abspath(esad_lib.__file__),
                "threads": torch.get_num_threads(),
                "train_images": seen.get("train_images"),
                "epoch_s": [float(r["seconds"]) for r in log],
                "validation_s": val_seconds if validation_loss is not None else None,
                "train_loss": [float(r["train_loss"]) for r in log],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

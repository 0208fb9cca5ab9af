"""Side-by-side speed benchmark: ESAD's lightweight U-Nets against the RIAD baseline (issue 7).

The paper (abstract; README "2. Proposed Method") introduces the lightweight U-Net "to meet
industrial requirements".  This package measures that claim and our own speed-ups in ONE
process run, with every group of contenders timed *interleaved* (round-robin, the order
rotated every repeat) after warm-up, reporting the median of several repeats -- so that the
ratios hold on a noisy, shared machine.  Sections (``esad bench --sections``), one module each:

1. ``models``        (``scoring_rows``) ESAD (two lightweight U-Nets) vs RIAD (one classic U-Net) at
                     the profile's resolution and width: parameters, MACs, full test-time scoring
                     of one image (every cutout size x every mask, the map included) at batch 1 and
                     batched, with ``cfg.fast_scoring`` on and off, and its peak memory.
2. ``authors``       (``authors_rows``) the library's fast scoring vs a plain re-statement of the
                     authors' test-time procedure (masks one at a time, eager), maps checked equal.
3. ``train``         (``training_rows``) one training step of ESAD vs RIAD at the profile's batch.
4. ``train_scaling`` (``train_scaling_rows``) training step time and peak memory per image at the
                     demo and paper settings, each ESAD training option as its own row, the paper
                     batch extrapolated (and labelled so) where it is not measured.
5. ``masks``         (``masks_rows``) the K masks of one cutout size batched vs a Python loop.
6. ``inference``     (``inference_rows``) inference options as speed-ups over the eager model,
                     outputs checked equal within a stated tolerance.
7. ``layers``        (``layers_rows``) where a U-Net forward spends its time, per layer kind.
8. ``metrics``       (``metrics_rows``) AU-sPRO and pixel AUROC at MVTec LOCO scale and against the
                     brute-force references.

Shared parts: ``settings`` (sizes, repeats, tolerances, targets), ``timing`` (interleaved
medians), ``workloads`` (the measured calls), ``memory`` (the subprocess peak-memory probe),
``metric_inputs``, ``onnx_session``, ``targets``, ``report`` (markdown and JSON) and ``run`` (the
entry point of ``esad bench``).

Rows that cannot run here (GPU rows without a GPU, ONNX without onnxruntime, a failing
``torch.compile``, an option this build's config lacks) are reported as ``skipped: why`` /
``failed: why`` / ``not available``, never estimated.  Figures measured on the project's
machines are in the README, not in the code.
"""

"""Benchmarks of esad-notebooks, outside the library: they call ``esad_lib`` and restate nothing.

``bench.py`` (``make bench``) measures ESAD against RIAD side by side; ``train_speed.py`` the
trainer's throughput, against an older commit with ``--against REV``; ``gpu_check.py`` the CUDA
path; ``retrain_check.py`` that a retrained model is bit-identical to the cached one.
"""

"""Benchmarks of esad-notebooks (``make bench``); the measurement code is the package ``esad_lib.bench``."""

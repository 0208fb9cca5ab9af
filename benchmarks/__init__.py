"""Benchmarks of esad-notebooks (``make bench``); the measurement code is ``esad_lib.benchmark``."""

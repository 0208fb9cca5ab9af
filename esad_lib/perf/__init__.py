"""Performance opt-ins applied from outside the paper's method (``esad_lib.method``)."""

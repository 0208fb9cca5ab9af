"""Every method behind one interface (``base.Detector``: ``fit`` + ``anomaly_maps``): ESAD / RIAD
(``EsadDetector``), the PatchCore-style reference (``PatchCore``) and the naive baseline
(``NaiveDetector``).  ``esad_lib.scoring.score_dataset`` scores any of them,
``esad_lib.evaluation.evaluate`` writes their metrics.json."""

from esad_lib.detectors.base import Detector, detector_name
from esad_lib.detectors.esad import EsadDetector
from esad_lib.detectors.naive import NaiveDetector
from esad_lib.patchcore import PatchCore

__all__ = ["Detector", "EsadDetector", "NaiveDetector", "PatchCore", "detector_name"]

"""Calibration of a collection (`scinsearch calibrate`): what "good enough" means, derived from its own data.

- `thresholds`: the suggestion thresholds (minimum similarity, agreement, support) with the best coverage
  for a stated precision, from a leave-case-out run on the train split, and the trade-off curve;
- `probe`: the gradability probe (logistic regression + Platt scaling on the stored vectors);
- `calibrate`: the pipeline, including the "nothing alike" similarity cut;
- `record`: the calibration record, stored in the collection's metadata, read by search and evaluation.

Importing this package loads only the record and the probe (numpy): the query path reads them.
"""

from scinsearch.calibration.probe import GradabilityProbe
from scinsearch.calibration.record import (
    METADATA_KEY,
    Calibration,
    calibration_of,
    save_calibration,
    suggestion_neighbours,
)

__all__ = [
    "METADATA_KEY",
    "Calibration",
    "GradabilityProbe",
    "calibration_of",
    "save_calibration",
    "suggestion_neighbours",
]

"""The calibration record: what `scinsearch calibrate` derived, stored in the collection's own record.

One JSON document under the collection metadata key METADATA_KEY (`collection.json` of the embedded
store, the collection metadata of a Qdrant server), so it travels with the collection, is dropped when
the collection is recreated, and needs no file beside it that could be lost or mixed up. `calibrate
--out FILE` writes the same document to a file for reading. It names the vector space it was derived
from: the model, the vector size and, for a collection of fine-tuned vectors (`finetune apply`), the
adapter's id; a record of another space is refused in one line.

    {"schema": "scinsearch.calibration/1", "model", "dim", "adapter", "created", "scinsearch_version", "points",
     "thresholds": {"min_similarity", "min_agreement", "min_support", "target_precision", "k",
                    "train": {"queries", "coverage", "precision", "coverage_ci95", "precision_ci95"}}
                   or, when no thresholds reached the target (suggestions off):
                   {"suggestions": "off", "target_precision", "k", "best": {"precision", "coverage", ...} | null},
     "nothing_alike": {"cut", "percentile", "images"},
     "probe": GradabilityProbe.to_dict() | null, "probe_note": why there is no probe, or null}
"""

from __future__ import annotations

import dataclasses
import math

from scinsearch import suggest
from scinsearch.calibration.probe import GradabilityProbe
from scinsearch.errors import ScinSearchError
from scinsearch.helpers import json_safe
from scinsearch.store.record import CALIBRATION

SCHEMA = "scinsearch.calibration/1"
METADATA_KEY = CALIBRATION  # the key of its document in the collection record (`store.record`)
THRESHOLD_NAMES = ("min_similarity", "min_agreement", "min_support")
OFF = "off"  # thresholds["suggestions"] when no thresholds reached the target precision
# Thresholds no query can meet: what "suggestions off" means to the suggestion rule and to the evaluation.
# (The search abstains by name instead, `Searcher.suggestion_thresholds`; these are for the evaluation.)
OFF_OPTIONS = {"min_similarity": math.inf, "min_agreement": 1.0, "min_support": 1}


@dataclasses.dataclass
class Calibration:
    model: str
    dim: int
    thresholds: dict  # THRESHOLD_NAMES plus how they were chosen
    nothing_alike: dict  # {"cut", "percentile", "images"}
    probe: GradabilityProbe | None = None
    probe_note: str | None = None
    points: int = 0
    created: str = ""
    scinsearch_version: str = ""
    adapter: str | None = None  # the id of the adapter that made the collection's vectors, if any

    @property
    def cut(self) -> float:
        return float(self.nothing_alike["cut"])

    @property
    def suggestions_off(self) -> bool:
        """Calibration found no thresholds reaching its target precision: every answer abstains."""
        return self.thresholds.get("suggestions") == OFF

    @property
    def neighbours(self) -> int:
        """How many neighbouring cases the thresholds were calibrated for (the one suggestion rule)."""
        return int(self.thresholds.get("k") or suggest.NEIGHBOURS)

    def suggestion_options(self) -> dict:
        """The thresholds as `suggest.suggest_conditions` keywords (ones no query meets when off)."""
        if self.suggestions_off:
            return dict(OFF_OPTIONS)
        options = {name: self.thresholds[name] for name in THRESHOLD_NAMES}
        options["min_support"] = int(options["min_support"])
        return options

    def to_dict(self) -> dict:
        """JSON-safe (NaN and numpy scalars become null and plain numbers): Qdrant stores strict JSON."""
        return json_safe(
            {
                "schema": SCHEMA,
                "model": self.model,
                "dim": self.dim,
                "adapter": self.adapter,
                "created": self.created,
                "scinsearch_version": self.scinsearch_version,
                "points": self.points,
                "thresholds": self.thresholds,
                "nothing_alike": self.nothing_alike,
                "probe": self.probe.to_dict() if self.probe is not None else None,
                "probe_note": self.probe_note,
            }
        )

    @classmethod
    def from_dict(cls, document: dict, model: str, dim: int, adapter: str | None = None) -> Calibration:
        """The record, refused in one line when it is damaged or was derived from another vector space
        (another model, size, or adapter)."""
        if not isinstance(document, dict) or document.get("schema") != SCHEMA:
            found = document.get("schema") if isinstance(document, dict) else type(document).__name__
            raise ScinSearchError(f"unknown calibration record ({found!r}): run `scinsearch calibrate` again")
        if document.get("model") != model or document.get("dim") != dim:
            raise ScinSearchError(
                f"the calibration was derived from {document.get('dim')}-d vectors of {document.get('model')!r}, "
                f"not {dim}-d vectors of {model!r}: run `scinsearch calibrate` on this collection"
            )
        if document.get("adapter") != adapter:
            raise ScinSearchError(
                f"the calibration was derived from vectors {space(document.get('adapter'))}, this collection holds "
                f"vectors {space(adapter)}: run `scinsearch calibrate` on this collection"
            )
        try:
            thresholds, nothing_alike = dict(document["thresholds"]), dict(document["nothing_alike"])
            for name in () if thresholds.get("suggestions") == OFF else THRESHOLD_NAMES:
                float(thresholds[name])
            float(nothing_alike["cut"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ScinSearchError(f"damaged calibration record ({exc}): run `scinsearch calibrate` again") from None
        probe = GradabilityProbe.from_dict(document["probe"], model, dim) if document.get("probe") else None
        return cls(
            model,
            dim,
            thresholds,
            nothing_alike,
            probe,
            document.get("probe_note"),
            int(document.get("points") or 0),
            str(document.get("created") or ""),
            str(document.get("scinsearch_version") or ""),
            adapter,
        )


def space(adapter: str | None) -> str:
    return f"of the adapter {adapter[:12]}" if adapter else "without an adapter"


def calibration_of(info) -> Calibration | None:
    """The calibration recorded with a collection (`store.CollectionInfo`), or None before `calibrate`."""
    document = info.calibration_document
    if document is None:
        return None
    return Calibration.from_dict(document, info.model, info.dim, info.adapter_id)


def suggestion_neighbours(calibration: Calibration | None) -> int:
    """The one number of neighbouring cases a suggestion is drawn from: the calibrated one, else the default."""
    return calibration.neighbours if calibration is not None else suggest.NEIGHBOURS


def save_calibration(store, calibration: Calibration) -> None:
    """Write the record into the collection's metadata (replacing any earlier one)."""
    store.update_metadata({METADATA_KEY: calibration.to_dict()})

"""What a search returns: neighbour cases with what a clinician needs to judge them, and the JSON form.

The JSON schema (`SearchResult.to_dict`, version SCHEMA) is the contract for scripts and the service;
docs/search.md ("JSON output") documents it field by field. Nothing about the query photo is ever included:
patient photos stay in memory.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from scinsearch.quality import QualityReport
from scinsearch.rules import similarity_band
from scinsearch.schema import SHOWN_FIELDS
from scinsearch.schema import case_ids as schema_case_ids  # `case_ids` is a field name here
from scinsearch.store import Hit
from scinsearch.suggest import Suggestions

SCHEMA = "scinsearch.search/1"
DISCLAIMER = (
    "Decision support, not a diagnosis: these are similar SCIN cases and their dermatologists' labels. "
    "A trained health worker must examine the patient and decide; refer when in doubt."
)
ZERO_SHOT_METHOD = (
    "SigLIP zero-shot: sigmoid(cosine x exp(logit_scale) + logit_bias) between the query image and "
    "the prompt {prompt!r}; each condition scored independently (no sum to 1), not trained on "
    "SCIN labels and not calibrated for diagnosis"
)


@dataclasses.dataclass
class Neighbour:
    """One stored image close to the query, with its case's labels and metadata."""

    score: float  # cosine similarity to the query, -1..1
    image_id: str
    case_id: str
    case_ids: list[str]  # every case the image belongs to (SCIN shares a few images between cases)
    image_path: str | None
    condition: str | None  # the heaviest dermatologist label
    weighted_labels: dict[str, float]
    metadata: dict[str, Any]  # the payload's `schema.SHOWN_FIELDS`; absent ones are None

    @classmethod
    def from_hit(cls, hit: Hit) -> Neighbour:
        payload = hit.payload
        case_id = str(payload.get("case_id") or "")
        case_ids = schema_case_ids(payload)
        return cls(
            score=float(hit.score),
            image_id=str(payload.get("image_id") or hit.id),
            case_id=case_id,
            case_ids=case_ids,
            image_path=payload.get("image_path"),
            condition=payload.get("condition"),
            weighted_labels=dict(payload.get("weighted_labels") or {}),
            metadata={name: payload.get(name) for name in SHOWN_FIELDS},
        )

    def to_dict(self) -> dict:
        return {
            "score": round(self.score, 6),
            "image_id": self.image_id,
            "case_id": self.case_id,
            "case_ids": self.case_ids,
            "image_path": self.image_path,
            "condition": self.condition,
            "weighted_labels": self.weighted_labels,
            **self.metadata,
        }


@dataclasses.dataclass
class ZeroShot:
    """SigLIP's own image-text scores for condition names: a separate, clearly labelled signal."""

    prompt: str
    scores: list[tuple[str, float]]  # (condition, probability), highest first

    def to_dict(self) -> dict:
        return {
            "method": ZERO_SHOT_METHOD.format(prompt=self.prompt),
            "prompt": self.prompt,
            "scores": [{"condition": name, "probability": round(p, 6)} for name, p in self.scores],
        }


@dataclasses.dataclass
class SearchResult:
    """Neighbours of one query, the condition suggestion drawn from them, and the disclaimer."""

    query: dict[str, Any]
    results: list[Neighbour]
    suggestions: Suggestions
    zero_shot: ZeroShot | None = None
    quality: QualityReport | None = None  # photo and stored-image queries; None for text queries
    refer: dict | None = None  # red-flag conditions among the suggestion's cases (`referral.referral`)
    model: str = ""
    collection: str = ""
    disclaimer: str = DISCLAIMER

    def to_dict(self) -> dict:
        output = {
            "schema": SCHEMA,
            "query": self.query,
            "model": self.model,
            "collection": self.collection,
            "results": [
                {**neighbour.to_dict(), "similarity_band": similarity_band(neighbour.score, self.query.get("kind"))}
                for neighbour in self.results
            ],
            "suggestions": self.suggestions.to_dict(),
            "refer": self.refer,
            "disclaimer": self.disclaimer,
        }
        if self.quality is not None:
            output["quality"] = self.quality.to_dict()
        if self.zero_shot is not None:
            output["zero_shot"] = self.zero_shot.to_dict()
        return output

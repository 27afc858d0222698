"""Synthetic collections for the explore tests: clustered unit vectors with SCIN-shaped payloads, and
planted defects (a cross-case duplicate, mislabelled images, a case whose photos do not belong together,
a vector that is not unit length) whose positions the tests know."""

from __future__ import annotations

import dataclasses

import numpy as np

from scinsearch.schema import point_id_for
from scinsearch.store import CollectionInfo, StoredPoint

SKIN = (("FST1", "I-II"), ("FST2", "I-II"), ("FST3", "III-IV"), ("FST4", "III-IV"), ("FST5", "V-VI"), ("FST6", "V-VI"))
SPLITS = ("train", "train", "train", "val", "test")
INFO = CollectionInfo("tiny-test-model", 32, {}, "fast")


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def payload(image_id: str, case_id: str, condition: str | None, number: int) -> dict:
    fst, group = SKIN[number % len(SKIN)]
    return {
        "image_id": image_id,
        "image_path": f"dataset/images/{image_id}.png",
        "case_id": case_id,
        "case_ids": [case_id],
        "condition": condition,
        "weighted_labels": {condition: 1.0} if condition else {},
        "fitzpatrick_skin_type": fst,
        "skin_type_group": group,
        "dermatologist_fitzpatrick_skin_type": fst,
        "dermatologist_skin_type_group": group,
        "monk_tone_group_us": "4-6",
        "monk_tone_group_india": "1-3",
        "body_parts": ["arm", "leg"] if number % 2 else ["torso_front"],
        "split": SPLITS[number % len(SPLITS)],
    }


@dataclasses.dataclass
class Collection:
    points: list[StoredPoint]
    centres: np.ndarray
    common: np.ndarray
    rng: np.random.Generator

    def vector_near(self, condition: int, noise: float = 0.6) -> np.ndarray:
        dim = self.centres.shape[1]
        return unit(0.6 * self.common + 0.8 * self.centres[condition] + noise * self.rng.normal(size=dim) / dim**0.5)

    def add(self, case_id: str, condition: str | None, vectors: list[np.ndarray]) -> list[int]:
        rows = []
        for n, vector in enumerate(vectors):
            image_id = f"{case_id}-{n}"
            number = len(self.points)
            fields = payload(image_id, case_id, condition, number)
            self.points.append(StoredPoint(point_id_for(image_id), fields, vector))
            rows.append(number)
        return rows


def clean_collection(conditions: int = 6, cases: int = 20, images: int = 2, dim: int = 32, seed: int = 0) -> Collection:
    """`conditions` well-separated clusters sharing a common direction (as real image embeddings do)."""
    rng = np.random.default_rng(seed)
    centres = np.stack([unit(rng.normal(size=dim)) for _ in range(conditions)])
    collection = Collection([], centres, unit(rng.normal(size=dim)), rng)
    for c in range(conditions):
        for k in range(cases):
            collection.add(f"c{c}k{k}", f"condition-{c}", [collection.vector_near(c) for _ in range(images)])
    return collection


@dataclasses.dataclass
class Planted:
    collection: Collection
    duplicate: tuple[int, int]  # rows: an image and its copy in another case
    mislabelled: list[int]  # rows of images of condition-0 labelled condition-1
    far_case: str  # a case whose second image is unlike any skin photo
    not_unit: int  # a row whose vector has norm 2


def planted_collection(seed: int = 0) -> Planted:
    collection = clean_collection(seed=seed)
    original = 5
    copy = collection.points[original].vector.copy()  # the same photo again
    duplicate = collection.add("dup-case", "condition-3", [copy])[0]
    mislabelled = [collection.add(f"wrong{k}", "condition-1", [collection.vector_near(0)])[0] for k in range(3)]
    stranger = unit(collection.rng.normal(size=collection.centres.shape[1]))  # no common component: not skin
    collection.add("far-case", "condition-2", [collection.vector_near(2), stranger])
    not_unit = collection.add("long-case", "condition-4", [2 * collection.vector_near(4)])[0]
    return Planted(collection, (original, duplicate), mislabelled, "far-case", not_unit)

"""Planted vectors for testing and benchmarking fine-tuning: the answer is known by construction.

Each image vector is a sum along orthonormal directions of one random basis:

    x = common + tone_c * TONE + light_v * LIGHT + nuisance_v + signal * CONDITION_k + noise

- a strong case-level "skin tone" (also written to the payload as Fitzpatrick type, dermatologist group
  and Monk tone, so the skin-type breakdowns are realistic) and a strong per-photo "lighting";
- further random per-photo nuisance directions (camera, body part);
- a subtle condition-specific direction: the only thing that tells conditions apart.

The frozen vectors therefore find neighbours of the same tone and lighting, not of the same condition;
a map that removes the nuisance directions separates the conditions. Payloads look like the ones
`scinsearch embed` stores (case ids, the real split-by-case rule, soft weighted labels, gradability,
skin types), with unlabelled and ungradable cases and one image shared by a train and a test case.

Condition texts (`text_vectors`) sit in a cone of their own (a constant "modality gap" direction, as in
SigLIP) and point along their condition's direction: what a text tower that agrees with the image tower
on the condition would give. They measure what an adapter does to text queries.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from scinsearch.cells import monk_tone_group, skin_type_group, split_for_case
from scinsearch.schema import point_id_for
from scinsearch.store import StoredPoint

CONDITIONS = [
    "Eczema",
    "Urticaria",
    "Tinea",
    "Psoriasis",
    "Acute dermatitis, NOS",
    "Insect Bite",
    "Allergic Contact Dermatitis",
    "Folliculitis",
]


@dataclasses.dataclass(frozen=True)
class PlantedSpace:
    dim: int = 32
    conditions: int = 5
    signal: float = 0.3  # length of the condition direction: subtle
    tone: float = 1.0  # standard deviation of the case's skin tone: strong
    lighting: float = 1.0  # standard deviation of the photo's lighting: strong
    nuisance: float = 0.5  # standard deviation along each further nuisance direction, per photo
    nuisance_directions: int = 4
    noise: float = 0.03  # isotropic, per coordinate
    seed: int = 0

    def basis(self) -> np.ndarray:
        """Orthonormal rows: common, tone, lighting, text gap, nuisance..., conditions..."""
        needed = 4 + self.nuisance_directions + self.conditions
        if needed > self.dim:
            raise ValueError(f"a {self.dim}-d space holds no {needed} orthogonal directions")
        q, _ = np.linalg.qr(np.random.default_rng(self.seed).normal(size=(self.dim, needed)))
        return q.T

    def condition_names(self) -> list[str]:
        return CONDITIONS[: self.conditions]


def planted_points(
    space: PlantedSpace, cases: int, seed: int = 1, shuffle_train_labels: bool = False
) -> list[StoredPoint]:
    """`cases` cases of 1-3 photos each, as stored points (vector + payload)."""
    rng = np.random.default_rng(seed)
    basis = space.basis()
    common, tone_axis, light_axis = basis[0], basis[1], basis[2]
    nuisance_axes = basis[4 : 4 + space.nuisance_directions]
    condition_axes = basis[4 + space.nuisance_directions :]
    names = space.condition_names()
    case_ids = [str(rng.integers(-(2**62), 2**62)) for _ in range(cases)]
    truths = [case % space.conditions for case in range(cases)]
    labels = list(truths)
    if shuffle_train_labels:  # the control: training labels carry no information about the vectors
        train = [case for case in range(cases) if split_for_case(case_ids[case]) == "train"]
        shuffled = np.random.default_rng(seed + 1_000_003).permutation(train)  # vectors stay the same
        for case, source in zip(train, shuffled):
            labels[case] = truths[source]
    points = []
    for case in range(cases):
        tone = rng.normal(0, space.tone)
        payload = case_payload(case, case_ids[case], names, labels[case], tone, rng)
        for view in range(1 + case % 3):
            vector = (
                common
                + tone * tone_axis
                + rng.normal(0, space.lighting) * light_axis
                + rng.normal(0, space.nuisance, len(nuisance_axes)) @ nuisance_axes
                + space.signal * condition_axes[truths[case]]
                + rng.normal(0, space.noise, space.dim)
            )
            image_id = f"planted-{case}-{view}"
            body = {
                **payload,
                "image_id": image_id,
                "image_path": f"dataset/images/{image_id}.png",
                "image_index": view + 1,
                "case_ids": [case_ids[case]],
            }
            points.append(
                StoredPoint(point_id_for(image_id), body, (vector / np.linalg.norm(vector)).astype(np.float32))
            )
    share_one_image(points)
    return points


def case_payload(case: int, case_id: str, names: list[str], label: int, tone: float, rng) -> dict:
    """A payload shaped like `dataset.case_payload` makes; every 9th case unlabelled, every 11th ungradable."""
    if case % 9 == 8:
        weighted = {}
    elif case % 3 == 0:
        weighted = {names[label]: 0.67, names[(label + 1) % len(names)]: 0.33}
    else:
        weighted = {names[label]: 1.0}
    fst = int(np.clip(np.floor((tone + 3) / 1.0), 1, 6))
    monk = int(np.clip(round((tone + 3) * 10 / 6), 1, 10))
    return {
        "case_id": case_id,
        "condition": max(weighted, key=weighted.get) if weighted else None,
        "conditions": list(weighted),
        "all_conditions": list(weighted),
        "weighted_labels": weighted,
        "labelled": bool(weighted),
        "gradable": case % 11 != 10,
        "split": split_for_case(case_id),
        "fitzpatrick_skin_type": f"FST{fst}",
        "skin_type_group": skin_type_group(f"FST{fst}"),
        "dermatologist_fitzpatrick_skin_type": f"FST{fst}",
        "dermatologist_skin_type_group": skin_type_group(f"FST{fst}"),
        "monk_skin_tone_label_us": monk,
        "monk_tone_group_us": monk_tone_group(monk),
    }


def share_one_image(points: list[StoredPoint]) -> None:
    """Like the release: one image belongs to two cases, here a train case and a test case (split: train)."""
    train = next((p for p in points if p.payload["split"] == "train"), None)
    test = next((p for p in points if p.payload["split"] == "test"), None)
    if train is not None and test is not None:
        train.payload["case_ids"] = [train.payload["case_id"], test.payload["case_id"]]


def text_vectors(space: PlantedSpace, alignment: float = 0.3, seed: int = 2) -> np.ndarray:
    """One unit text vector per condition: the text cone's gap direction plus the condition direction."""
    rng = np.random.default_rng(seed)
    basis = space.basis()
    gap = basis[3]
    axes = basis[4 + space.nuisance_directions :]
    texts = gap + alignment * axes + rng.normal(0, space.noise, (space.conditions, space.dim))
    return (texts / np.linalg.norm(texts, axis=1, keepdims=True)).astype(np.float32)


def store_planted(settings, points: list[StoredPoint], model: str = "planted-model", extra: dict | None = None) -> None:
    """Write planted points into the collection `settings` names (created for `model` and their size, its
    record holding `extra`)."""
    from scinsearch.store import CollectionInfo, open_store

    store = open_store(settings)
    try:
        store.create(CollectionInfo(model, len(points[0].vector), extra or {}))
        store.upsert(points)
        store.finish_writes()
    finally:
        store.close()


def planted_with_adapter(folder, points: list[StoredPoint], config, extra: dict | None = None) -> tuple:
    """The planted collection "planted" (model "planted-model") in an embedded store under `folder`, and an
    adapter trained on it with `config`, saved in folder/adapter: (settings, the adapter folder)."""
    from scinsearch.finetune.adapter import save_adapter, train_adapter
    from scinsearch.settings import Settings
    from scinsearch.vectors.neighbours import table_from_points

    settings = Settings(qdrant_path=folder / "qdrant", collection="planted")
    store_planted(settings, points, extra=extra)
    trained = train_adapter(table_from_points(points), model="planted-model", collection="planted", config=config)
    return settings, save_adapter(trained, folder / "adapter")

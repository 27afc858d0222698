"""What fine-tuning may learn from: labelled images of the TRAIN split only, split again by case.

Both methods (the adapter on stored vectors, LoRA on images) take their examples from here, so the
rules live in one place:

- an image is a training example only when its own `split` is train AND every case it belongs to
  (`case_ids`: an image can be shared by several cases) is a train case: an image shared with a val or
  test case never reaches training, and neither does a case whose split cannot be established;
- it needs a dermatologist label (cases without a weighted label are left out: no evidence);
- cases the dermatologists marked not gradable are left out (image quality insufficient: noise);
- a validation set for early stopping is carved from these train cases by case (cases linked by a
  shared image stay together), with a seeded permutation of the sorted case groups, so the result does
  not depend on the order the store returns points in.

The soft target of an image is its weighted label restricted to the conditions seen in the fit part and
renormalised to sum 1; each case weighs the same whatever its number of photos (1 / views per image).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from scinsearch.errors import ScinSearchError
from scinsearch.schema import TEST_SPLIT, TRAIN_SPLIT
from scinsearch.store import StoredPoint
from scinsearch.vectors.neighbours import PointTable, case_clusters, table_from_points

VALIDATION_FRACTION = 0.15
MIN_CASES = 4  # fewer labelled train cases than this cannot give both a fit and a validation part


@dataclasses.dataclass
class TrainingSet:
    """Row indices into a `PointTable` (fit and validation parts), the condition vocabulary, and why
    the other rows were left out."""

    table: PointTable
    fit: np.ndarray
    validation: np.ndarray
    conditions: list[str]
    left_out: dict[str, int]

    def targets(self, rows: np.ndarray) -> np.ndarray:
        """(rows, conditions) soft targets; an all-zero row has no mass on a known condition."""
        index = {c: j for j, c in enumerate(self.conditions)}
        out = np.zeros((len(rows), len(self.conditions)), dtype=np.float32)
        for i, row in enumerate(rows):
            for condition, weight in self.table.weighted[row].items():
                if condition in index:
                    out[i, index[condition]] = weight
        totals = out.sum(axis=1, keepdims=True)
        return np.divide(out, totals, out=np.zeros_like(out), where=totals > 0)

    def case_weights(self, rows: np.ndarray) -> np.ndarray:
        """1 / (images of the same case group among `rows`): every case counts once in the loss."""
        clusters = case_clusters([self.table.case_ids[r] for r in rows])
        return (1.0 / np.bincount(clusters)[clusters]).astype(np.float32)

    def case_ids(self, rows: np.ndarray) -> list[str]:
        return sorted({c for r in rows for c in self.table.case_ids[r]})

    def summary(self) -> dict:
        return {
            "fit_images": int(len(self.fit)),
            "fit_cases": len(self.case_ids(self.fit)),
            "validation_images": int(len(self.validation)),
            "validation_cases": len(self.case_ids(self.validation)),
            "conditions": len(self.conditions),
            "left_out_images": dict(self.left_out),
        }


def table_from_payloads(ids: Sequence[str], payloads: Sequence[dict]) -> PointTable:
    """A `PointTable` of payloads only (zero-width vectors): what LoRA selects its images from."""
    return table_from_points([StoredPoint(i, p, np.zeros(0, dtype=np.float32)) for i, p in zip(ids, payloads)])


def case_splits(table: PointTable) -> dict[str, set[str]]:
    """Every case id -> the splits its own images (where it is the first case) say it is in."""
    splits: dict[str, set[str]] = {}
    for ids, split in zip(table.case_ids, table.splits):
        splits.setdefault(ids[0], set()).add(split or "")
    return splits


def eligible_rows(table: PointTable) -> tuple[np.ndarray, dict[str, int]]:
    """Rows that may be trained on (see the module docstring), sorted by image id, and counts of the rest."""
    known = case_splits(table)
    left_out = {"not_train_split": 0, "shares_a_case_outside_train": 0, "unlabelled": 0, "not_gradable": 0}
    rows = []
    for row in sorted(range(len(table)), key=lambda r: table.image_ids[r]):
        if table.splits[row] != TRAIN_SPLIT:
            left_out["not_train_split"] += 1
        elif any(known.get(case) != {TRAIN_SPLIT} for case in table.case_ids[row]):
            left_out["shares_a_case_outside_train"] += 1
        elif not table.weighted[row]:
            left_out["unlabelled"] += 1
        elif table.gradable[row] is False:
            left_out["not_gradable"] += 1
        else:
            rows.append(row)
    return np.array(rows, dtype=np.int64), left_out


def choose_examples(table: PointTable, seed: int = 0, validation_fraction: float = VALIDATION_FRACTION) -> TrainingSet:
    """The fit and validation rows: train-split labelled images, validation carved out by case group."""
    if not 0 < validation_fraction < 1:
        raise ScinSearchError(f"the validation fraction must be between 0 and 1, not {validation_fraction}")
    rows, left_out = eligible_rows(table)
    clusters = case_clusters([table.case_ids[r] for r in rows])
    first_case: dict[int, str] = {}
    for row, cluster in zip(rows, clusters):
        smallest = min(table.case_ids[row])
        first_case[int(cluster)] = min(first_case.get(int(cluster), smallest), smallest)
    groups = sorted(first_case, key=first_case.get)  # by case id: independent of the store's order
    if len(groups) < MIN_CASES:
        raise ScinSearchError(
            f"only {len(groups)} labelled, gradable train-split cases: fine-tuning needs at "
            f"least {MIN_CASES} (is the collection embedded with its payloads?)"
        )
    order = np.random.default_rng(seed).permutation(len(groups))
    n_validation = min(len(groups) - 1, max(1, round(validation_fraction * len(groups))))
    held = {groups[i] for i in order[:n_validation]}
    in_validation = np.array([int(c) in held for c in clusters], dtype=bool)
    fit, validation = rows[~in_validation], rows[in_validation]
    conditions = sorted({c for r in fit for c in table.weighted[r]})
    return TrainingSet(table, fit, validation, conditions, left_out)


def relabelled_for_evaluation(training: TrainingSet, vectors: np.ndarray) -> PointTable:
    """The fit and validation rows as a table whose validation rows are 'test' and fit rows 'train', so
    that `evaluation.evaluate_table` measures validation cases against the fit cases (same metrics)."""
    rows = np.concatenate([training.fit, training.validation])
    table = training.table
    splits = [TRAIN_SPLIT] * len(training.fit) + [TEST_SPLIT] * len(training.validation)
    return PointTable(
        vectors=vectors,
        image_ids=[table.image_ids[r] for r in rows],
        case_ids=[table.case_ids[r] for r in rows],
        primary=[table.primary[r] for r in rows],
        weighted=[table.weighted[r] for r in rows],
        label_sets=[table.label_sets[r] for r in rows],
        gradable=[table.gradable[r] for r in rows],
        splits=splits,
        groups={name: [values[r] for r in rows] for name, values in table.groups.items()},
    )

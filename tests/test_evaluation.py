"""`scinsearch evaluate` on planted data whose answer is known by construction, and end to end.

Planted collections: each condition owns one direction of the vector space, every case sits near its
condition's direction (plus noise), and its 1-3 views sit near the case. Labels can then be flipped on
purpose, so the accuracy the evaluation must find is a count, not a guess.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import fill_store
from scinsearch import cells
from scinsearch.cli import main
from scinsearch.evaluation import evaluate_collection, evaluate_table
from scinsearch.schema import point_id_for
from scinsearch.settings import Settings
from scinsearch.store import CollectionInfo, StoredPoint, open_store
from scinsearch.vectors.neighbours import table_from_points

CONDITIONS = ["Eczema", "Urticaria", "Tinea", "Psoriasis", "Acute dermatitis, NOS"]
DERM_GROUPS = ["I-II", "III-IV", "V-VI", "unknown"]


def payload(case: int, view: int, condition: str, split: str, derm_group: str = "I-II") -> dict:
    """A payload shaped like `dataset.case_payload` makes (only the fields evaluation reads, and some more)."""
    case_id, image_id = f"case{case}", f"img{case}-{view}"
    self_fst = f"FST{(case // 3) % 6 + 1}"
    return {
        "image_id": image_id,
        "image_path": f"dataset/images/{image_id}.png",
        "case_id": case_id,
        "case_ids": [case_id],
        "condition": condition,
        "conditions": [condition],
        "all_conditions": [condition, condition],
        "weighted_labels": {condition: 1.0},
        "labelled": True,
        "gradable": True,
        "split": split,
        "fitzpatrick_skin_type": self_fst,
        "skin_type_group": cells.skin_type_group(self_fst),
        "dermatologist_skin_type_group": derm_group,
        "monk_tone_group_us": ["1-3", "4-6", "7-10"][(case // 3) % 3],
        "image_index": view + 1,
    }


def planted(
    cases: int,
    seed: int,
    flip=lambda case, rng: False,
    split=lambda case: "train",
    derm_group=lambda case: DERM_GROUPS[case % 4],
    dim: int = 16,
    noise: float = 0.08,
):
    """Clustered points; `flip(case)` True gives the case the next condition's label while its vectors stay
    in the true cluster. Returns the points and, per point, whether its label was flipped."""
    rng = np.random.default_rng(seed)
    points, flipped = [], []
    for case in range(cases):
        truth = case % len(CONDITIONS)
        wrong = bool(flip(case, rng))
        label = CONDITIONS[(truth + 1) % len(CONDITIONS)] if wrong else CONDITIONS[truth]
        centre = np.eye(dim)[truth] + rng.normal(0, noise, dim)
        for view in range(1 + case % 3):
            body = payload(case, view, label, split(case), derm_group(case))
            vector = (centre + rng.normal(0, noise / 4, dim)).astype(np.float32)
            points.append(StoredPoint(point_id_for(body["image_id"]), body, vector))
            flipped.append(wrong)
    return points, np.array(flipped)


def write_store(tmp_path, points, name: str = "planted") -> Settings:
    settings = Settings(qdrant_path=tmp_path / "qdrant", collection=name)
    store = open_store(settings)
    try:
        store.create(CollectionInfo("planted-model", len(points[0].vector)))
        store.upsert(points)
        store.finish_writes()
    finally:
        store.close()
    return settings


def value(result, system: str, metric: str) -> float:
    return result.metrics["metrics"][system][metric]["value"]


def test_split_accuracy_matches_the_planted_label_noise(tmp_path):
    def split(case):
        return "test" if case % 4 == 0 else "train"

    points, flipped = planted(120, seed=3, split=split, flip=lambda case, rng: case % 4 == 0 and rng.random() < 0.3)
    queries = np.array([p.payload["split"] == "test" for p in points])
    expected = 1 - flipped[queries].mean()  # a flipped query is wrong, every other query right
    result = evaluate_collection(write_store(tmp_path, points), k=5, bootstrap=300, out_dir=None)
    assert 0 < flipped[queries].mean() < 1, "the construction must flip some test labels"
    assert result.metrics["counts"]["queries"] == queries.sum()
    for system in ("suggestions", "knn_majority"):
        assert value(result, system, "top1_accuracy") == pytest.approx(expected)
        low, high = result.metrics["metrics"][system]["top1_accuracy"]["ci95"]
        assert low <= expected <= high
    assert value(result, "retrieval", "recall@1") == pytest.approx(expected)
    assert value(result, "knn_majority", "macro_auc") < 1.0
    # every train case is labelled correctly and clustered: the classes separate perfectly without flips
    clean = evaluate_table(
        table_from_points(planted(120, seed=3, split=split)[0]), model="m", collection="c", k=5, bootstrap=0
    )
    assert value(clean, "knn_majority", "top1_accuracy") == 1.0
    assert value(clean, "suggestions", "macro_auc") == 1.0


def test_case_bootstrap_intervals_cover_the_true_accuracy():
    """Each test case is mislabelled with probability 0.3, so the true accuracy is 0.7; across independent
    planted data sets the 95% interval must contain 0.7 about 95% of the time."""
    covered = 0
    for seed in range(20):
        points, _ = planted(
            90,
            seed=seed,
            split=lambda case: "test" if case % 3 == 0 else "train",
            flip=lambda case, rng: case % 3 == 0 and rng.random() < 0.3,
        )
        result = evaluate_table(table_from_points(points), model="m", collection="c", k=5, bootstrap=300, seed=seed)
        low, high = result.metrics["metrics"]["knn_majority"]["top1_accuracy"]["ci95"]
        covered += low <= 0.7 <= high
    assert covered >= 16  # P(<16 of 20) is under 2% at 95% coverage


def test_leaking_the_own_case_changes_the_number():
    """Cases on a circle, conditions alternating: the nearest *other* case always has the other condition,
    while a case's own second view is identical. Honest top-1 is 0; counting the own case gives 1."""
    points = []
    for case in range(24):
        angle = 2 * np.pi * case / 24
        vector = np.array([np.cos(angle), np.sin(angle)], dtype=np.float32)
        for view in range(2):
            body = payload(case, view, CONDITIONS[case % 2], "train")
            points.append(StoredPoint(point_id_for(body["image_id"]), body, vector + 1e-4 * view))
    table = table_from_points(points)
    honest = evaluate_table(table, model="m", collection="c", protocol="leave-case-out", k=1, bootstrap=0)
    leaky = evaluate_table(
        table, model="m", collection="c", protocol="leave-case-out", k=1, bootstrap=0, exclude_own_case=False
    )
    assert value(honest, "knn_majority", "top1_accuracy") == 0.0
    assert value(honest, "retrieval", "recall@1") == 0.0
    assert value(leaky, "knn_majority", "top1_accuracy") == 1.0
    assert leaky.metrics["exclude_own_case"] is False and honest.metrics["exclude_own_case"] is True
    assert honest.metrics["counts"]["queries"] == leaky.metrics["counts"]["queries"] == 48


def test_baselines_match_the_construction():
    """Unbalanced classes: the majority baseline is the share of queries of the most common class; constant
    scores give AUC 0.5; random neighbours are far below the clustered search."""
    conditions = ["Eczema"] * 6 + ["Tinea"] * 3 + ["Urticaria"] * 1
    points = []
    rng = np.random.default_rng(0)
    for case in range(200):
        condition = conditions[case % 10]
        centre = np.eye(8)[CONDITIONS.index(condition)] + rng.normal(0, 0.05, 8)
        body = payload(case, 0, condition, "test" if case % 3 == 0 else "train")
        points.append(StoredPoint(point_id_for(body["image_id"]), body, centre.astype(np.float32)))
    result = evaluate_table(table_from_points(points), model="m", collection="c", k=5, bootstrap=0)
    top1 = result.metrics["metrics"]["knn_majority"]["top1_accuracy"]
    test_conditions = [conditions[case % 10] for case in range(0, 200, 3)]
    assert top1["baselines"]["majority"] == pytest.approx(test_conditions.count("Eczema") / len(test_conditions))
    assert result.metrics["metrics"]["knn_majority"]["top3_accuracy"]["baselines"]["majority"] == 1.0
    assert result.metrics["metrics"]["suggestions"]["macro_auc"]["baselines"]["majority"] == 0.5
    assert top1["value"] == 1.0 and top1["baselines"]["random"] < 0.9
    assert result.metrics["metrics"]["retrieval"]["recall@1"]["baselines"]["majority"] == top1["baselines"]["majority"]


def test_breakdowns_measure_each_group_on_its_own_queries():
    """Mislabel exactly the V-VI cases: that group must score 0 and the others 1, with honest counts."""

    def test_case(case):
        return case % 3 == 0  # independent of the group (case % 4) and condition (case % 5)

    points, _ = planted(
        160,
        seed=1,
        split=lambda case: "test" if test_case(case) else "train",
        flip=lambda case, rng: test_case(case) and DERM_GROUPS[case % 4] == "V-VI",
    )
    result = evaluate_table(table_from_points(points), model="m", collection="c", k=3, bootstrap=100)
    groups = result.metrics["breakdowns"]["dermatologist_skin_type_group"]
    assert list(groups) == ["I-II", "III-IV", "V-VI", "unknown"]
    for group, block in groups.items():
        expected = 0.0 if group == "V-VI" else 1.0
        assert block["metrics"]["knn_majority"]["top1_accuracy"]["value"] == expected
        mine = [
            p for p in points if p.payload["dermatologist_skin_type_group"] == group and p.payload["split"] == "test"
        ]
        assert block["queries"] == len(mine) and block["cases"] == len({p.payload["case_id"] for p in mine}) >= 13
        assert block["metrics"]["knn_majority"]["top1_accuracy"]["ci95"] is not None
    assert sum(b["queries"] for b in groups.values()) == result.metrics["counts"]["queries"]
    assert list(result.metrics["breakdowns"]["self_reported_fitzpatrick"]) == [f"FST{n}" for n in range(1, 7)]
    assert list(result.metrics["breakdowns"]["monk_tone_group_us"]) == ["1-3", "4-6", "7-10"]


class PromptEmbedder:
    """Text tower stand-in: a prompt naming a condition maps to that condition's cluster direction."""

    model_name = "prompt-model"
    dim = 16

    def embed_texts(self, texts):
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            name = text.removeprefix("a photo of ")
            vectors[row, CONDITIONS.index(name) if name in CONDITIONS else self.dim - 1] = 1.0
        return vectors


def test_zero_shot_scores_the_text_tower():
    points, _ = planted(40, seed=2, split=lambda case: "test" if case % 2 else "train")
    result = evaluate_table(
        table_from_points(points), model="m", collection="c", text_embedder=PromptEmbedder(), bootstrap=50
    )
    assert value(result, "zero_shot", "top1_accuracy") == 1.0
    assert result.metrics["zero_shot"]["template"] == "a photo of {condition}"


def test_report_files_are_written(tmp_path):
    points, _ = planted(
        60, seed=4, split=lambda case: "test" if case % 3 == 0 else "train", flip=lambda case, rng: rng.random() < 0.2
    )
    out = tmp_path / "reports" / "planted"
    result = evaluate_collection(write_store(tmp_path, points), k=5, bootstrap=50, out_dir=out)
    names = sorted(f.name for f in result.files)
    assert names == [
        "accuracy_by_skin_type.png",
        "confusion_knn_majority.png",
        "confusion_suggestions.png",
        "metrics.json",
        "report.md",
        "suggestion_tradeoff.png",
    ]
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert metrics["schema_version"] == 1 and metrics["model"] == "planted-model" and metrics["protocol"] == "split"
    assert metrics["k"] == 5 and metrics["bootstrap"]["unit"] == "case" and metrics["created"]
    assert set(metrics["breakdowns"]) == {
        "self_reported_fitzpatrick",
        "dermatologist_skin_type_group",
        "monk_tone_group_us",
    }
    assert metrics["confusion"]["conditions"] and metrics["confusion"]["columns"][-1] == "other"
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    report = (out / "report.md").read_text()
    assert "## By skin type" in report and "majority baseline" in report and "accuracy_by_skin_type.png" in report
    assert "**not calibrated**" in report and "suggestion_tradeoff.png" in report
    assert result.table_lines()[0].startswith("planted-model on planted: split, k=5")


@pytest.fixture
def embedded_release(tmp_path, clean_index) -> Settings:
    settings = Settings(qdrant_path=tmp_path / "qdrant", collection="scin_test")
    store = open_store(settings)
    try:
        fill_store(store, clean_index)  # the clean release as the embed pipeline stored it
    finally:
        store.close()
    return settings


def test_cli_evaluates_an_embedded_release(embedded_release, tmp_path, capsys):
    out = tmp_path / "report"
    code = main(
        [
            "evaluate",
            "--qdrant-path",
            str(embedded_release.qdrant_path),
            "--collection",
            "scin_test",
            "--out",
            str(out),
            "--leave-case-out",
            "--k",
            "3",
            "--bootstrap",
            "50",
            "--zero-shot",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "top-1 accuracy" in captured.out and "recall@3" in captured.out and "zero_shot" in captured.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "leave-case-out" and metrics["counts"]["queries"] > 0
    assert metrics["zero_shot"]["model"] == metrics["model"]  # the collection's own model, not the default
    assert (out / "accuracy_by_skin_type.png").is_file() and (out / "report.md").is_file()


def test_cli_errors_are_one_line(tmp_path, capsys):
    code = main(
        [
            "evaluate",
            "--qdrant-path",
            str(tmp_path / "empty"),
            "--collection",
            "nothing",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("Error: collection 'nothing' does not exist") and err.count("\n") == 1
    assert str(tmp_path) in err  # the store is named
    points, _ = planted(10, seed=0)  # every case in train: no test queries
    settings = write_store(tmp_path, points, name="all_train")
    code = main(
        [
            "evaluate",
            "--qdrant-path",
            str(settings.qdrant_path),
            "--collection",
            "all_train",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "no labelled images of gradable cases in the test split" in err and err.count("\n") == 1
    assert "evaluate with --leave-case-out" in err


def test_cli_refuses_a_zero_shot_model_of_another_vector_space(tmp_path, capsys):
    points, _ = planted(10, seed=0)
    settings = write_store(tmp_path, points)
    arguments = ["evaluate", "--qdrant-path", str(settings.qdrant_path), "--collection", "planted"]
    model = "google/siglip-base-patch16-224"
    code = main([*arguments, "--out", str(tmp_path / "out"), "--zero-shot", "--model", model])
    err = capsys.readouterr().err
    assert code == 1 and "holds vectors of 'planted-model', not of 'google/siglip-base-patch16-224'" in err
    assert "leave --model out" in err and err.count("\n") == 1

"""Research-grade verdicts (issue 24): Holm within two families (checked against statsmodels), differences
that are the difference of their two columns, no verdict from shuffled-label controls, Wilson intervals for
small groups, and `scinsearch compare` over collections of the same images."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from scinsearch.cli import main
from scinsearch.errors import ScinSearchError
from scinsearch.evaluation import evaluate_table
from scinsearch.evaluation.collections import Run, compare_runs
from scinsearch.evaluation.compare import adjust_families, differences, unadjusted
from scinsearch.evaluation.evaluate import EvaluationResult, Outcome, PerQuery
from scinsearch.finetune import loss as L
from scinsearch.finetune.adapter import run_epoch, tensors
from scinsearch.finetune.data import choose_examples
from scinsearch.settings import Settings
from scinsearch.testing.planted import PlantedSpace, planted_points, store_planted
from scinsearch.vectors import metrics as m
from scinsearch.vectors.adapter import ResidualMap, transform
from scinsearch.vectors.neighbours import table_from_points

VERDICTS = {"better", "worse"}


def all_entries(metrics: dict, run: str):
    """(family, metric, entry) of every difference of `run` against the first."""
    blocks = metrics["differences"][run]
    for block in blocks["overall"].values():
        for metric, entry in block.items():
            yield "primary", metric, entry
    for groups in blocks["breakdowns"].values():
        for group in groups.values():
            for block in group.values():
                for metric, entry in block.items():
                    yield "secondary", metric, entry


def test_holm_levels_match_statsmodels():
    rng = np.random.default_rng(3)
    for size in (1, 5, 40, 300):
        p = np.concatenate([rng.uniform(size=size - size // 5), rng.uniform(0, 1e-4, size // 5)])
        adjusted, levels = m.holm_levels(p, 0.05)
        reject, reference, _, _ = multipletests(p, alpha=0.05, method="holm")
        assert np.allclose(adjusted, reference)
        assert np.array_equal(p < levels, reject)  # "the interval at its level excludes 0" == Holm rejects
        assert np.array_equal(adjusted < 0.05, reject)


def fake_result(values: dict[str, np.ndarray], clusters: np.ndarray) -> EvaluationResult:
    outcome = Outcome({name: np.asarray(v, dtype=np.float64) for name, v in values.items()})
    return EvaluationResult({"breakdowns": {}}, per_query=PerQuery([], clusters, {}, {"suggestions": outcome}))


def test_a_difference_is_the_difference_of_the_columns_with_queries_confident_in_one_run_only():
    """Run 1 is confident on the first half of the queries, run 2 on the second half only: no query is
    confident in both, yet each column is defined, and the difference is their difference."""
    rng = np.random.default_rng(0)
    n = 200
    correct_first, correct_second = rng.uniform(size=n) < 0.25, rng.uniform(size=n) < 0.6
    first = np.where(np.arange(n) < n // 2, correct_first, np.nan)
    second = np.where(np.arange(n) >= n // 2, correct_second, np.nan)
    clusters = np.arange(n) // 2  # two views per case
    block = differences(
        fake_result({"top1_accuracy_when_confident": first, "coverage": ~np.isnan(first)}, clusters),
        fake_result({"top1_accuracy_when_confident": second, "coverage": ~np.isnan(second)}, clusters),
        np.ones(n, dtype=bool),
        500,
        0,
    )["suggestions"]
    entry = block["top1_accuracy_when_confident"]
    assert entry["value"] == pytest.approx(np.nanmean(second) - np.nanmean(first))
    assert entry["ci95"][0] < entry["value"] < entry["ci95"][1]
    assert block["coverage"]["value"] == pytest.approx(0.0)
    adjust_families({"second": {"overall": {"suggestions": block}, "breakdowns": {}}})
    assert entry["verdict"] == "better" and block["coverage"]["verdict"] == "within the interval"


def test_families_are_adjusted_by_holm_like_statsmodels():
    rng = np.random.default_rng(1)
    blocks = {"overall": {"s": {}}, "breakdowns": {"g": {}}}
    for i in range(12):
        shift = 0.5 if i < 3 else 0.0
        samples = rng.normal(shift, 0.1, 400)
        blocks["overall"]["s"][f"metric{i}"] = unadjusted(float(samples.mean()), samples, 50)
    for i in range(30):
        samples = rng.normal(0.02 * (i % 4), 0.05, 400)
        blocks["breakdowns"]["g"][f"group{i}"] = {
            "s": {"top1_accuracy": unadjusted(float(samples.mean()), samples, 50)}
        }
    families = adjust_families({"run": blocks})
    assert families["primary"]["comparisons"] == 12 and families["secondary"]["comparisons"] == 30
    for family, entries in (
        ("primary", list(blocks["overall"]["s"].values())),
        ("secondary", [g["s"]["top1_accuracy"] for g in blocks["breakdowns"]["g"].values()]),
    ):
        reject, adjusted, _, _ = multipletests([e["p_value"] for e in entries], alpha=0.05, method="holm")
        assert np.allclose([e["p_adjusted"] for e in entries], adjusted)
        assert [e["verdict"] in VERDICTS for e in entries] == list(reject)
        for e in entries:  # the verdict reads the adjusted interval
            assert (e["verdict"] in VERDICTS) == (e["ci"][0] > 0 or e["ci"][1] < 0), family
            assert e["ci"][1] - e["ci"][0] >= 0
    assert sum(e["verdict"] == "better" for e in blocks["overall"]["s"].values()) == 3


def shuffled_label_control(table, seed: int, epochs: int = 10) -> np.ndarray:
    """The vectors through a map trained (final epoch, no selection) on train labels shuffled across train
    cases: a model that moved, but learnt nothing about the conditions."""
    training = choose_examples(table, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    module = ResidualMap(table.vectors.shape[1], 16, generator)
    fit = tensors(training, training.fit)
    head = L.PrototypeHead(L.class_means(*fit), 0.1)
    optimiser = torch.optim.AdamW([*module.parameters(), *head.parameters()], lr=3e-2)
    for _ in range(epochs):
        run_epoch(module, head, optimiser, fit, 256, generator)
    return transform(module, table.vectors)


def test_shuffled_label_controls_earn_no_verdict_in_any_row_on_three_seeds():
    """700 planted cases per seed (vectors, no images). Read one by one, some unadjusted 95% intervals of
    these null comparisons exclude 0 (what the report used to call better / worse); adjusted, none does."""
    uncorrected = 0
    for seed in (0, 1, 2):
        space = PlantedSpace(seed=20 + seed)
        table = table_from_points(planted_points(space, 700, seed=30 + seed, shuffle_train_labels=True))
        control = dataclasses.replace(table, vectors=shuffled_label_control(table, seed))
        assert float(np.abs(control.vectors - table.vectors).max()) > 0.05  # it moved
        metrics = compare_runs(
            {"frozen": Run(table, "m"), "control": Run(control, "m")}, bootstrap=200, seed=seed
        ).metrics
        assert metrics["runs"]["frozen"]["counts"]["query_cases"] >= 60
        entries = list(all_entries(metrics, "control"))
        tested = [f for f, _, e in entries if "p_value" in e]
        assert metrics["families"]["primary"]["comparisons"] == tested.count("primary") >= 15
        assert metrics["families"]["secondary"]["comparisons"] == tested.count("secondary") >= 100
        verdicts = [(f, metric, e["verdict"], e["value"]) for f, metric, e in entries if e["verdict"] in VERDICTS]
        assert verdicts == [], (seed, verdicts)
        uncorrected += sum(1 for _, _, e in entries if e.get("ci95") and (e["ci95"][0] > 0 or e["ci95"][1] < 0))
    assert uncorrected >= 3, "the control must be a null that uncorrected intervals misread"


def boosted_for_dark_skin(table, space: PlantedSpace, strength: float = 1.5):
    """The same images, with the condition made plain only for dermatologist skin types V-VI."""
    axes = space.basis()[4 + space.nuisance_directions :]
    names = space.condition_names()
    vectors = table.vectors.copy()
    for row, group in enumerate(table.groups["dermatologist_skin_type_group"]):
        if group == "V-VI" and table.primary[row] in names:
            vectors[row] += strength * axes[names.index(table.primary[row])]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return dataclasses.replace(table, vectors=vectors)


@pytest.fixture(scope="module")
def dark_skin_pair(tmp_path_factory):
    space = PlantedSpace(seed=41, tone=2.0)  # enough cases of types V-VI in the test split
    points = planted_points(space, 900, seed=42)
    table = table_from_points(points)
    better = boosted_for_dark_skin(table, space)
    settings = Settings(qdrant_path=tmp_path_factory.mktemp("pair") / "qdrant", collection="base")
    by_image = dict(zip(better.image_ids, better.vectors))
    for name, vectors_of in (("base", lambda p: p.vector), ("tuned", lambda p: by_image[p.payload["image_id"]])):
        moved = [dataclasses.replace(p, vector=vectors_of(p)) for p in reversed(points)]  # another order
        store_planted(settings.replace(collection=name), moved)
    return settings, table, better


def test_compare_finds_the_collection_better_for_types_v_vi_only(dark_skin_pair, tmp_path, capsys):
    settings, _, _ = dark_skin_pair
    out = tmp_path / "compare"
    code = main(
        [
            "compare",
            "--qdrant-path",
            str(settings.qdrant_path),
            "--collection",
            "base",
            "--collection",
            "tuned",
            "--out",
            str(out),
            "--bootstrap",
            "300",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "tuned − base" in captured.out
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert metrics["kind"] == "collection-comparison" and [c["collection"] for c in metrics["collections"]] == [
        "base",
        "tuned",
    ]
    groups = metrics["differences"]["tuned"]["breakdowns"]["dermatologist_skin_type_group"]
    assert metrics["runs"]["base"]["breakdowns"]["dermatologist_skin_type_group"]["V-VI"]["cases"] >= 10
    assert groups["V-VI"]["knn_majority"]["top1_accuracy"]["verdict"] == "better"
    for group in ("I-II", "III-IV"):
        found = [
            (s, k, e["verdict"]) for s, b in groups[group].items() for k, e in b.items() if e["verdict"] in VERDICTS
        ]
        assert found == [], (group, found)
    report = (out / "report.md").read_text()
    v_vi = [
        line
        for line in report.splitlines()
        if line.startswith("| V-VI |") and "| knn_majority | top-1 accuracy |" in line
    ]
    assert len(v_vi) == 1 and "**better**" in v_vi[0]
    assert not any(
        "**better**" in line or "**worse**" in line
        for line in report.splitlines()
        if line.startswith(("| I-II |", "| III-IV |"))
    )
    assert "primary** family holds" in report and "secondary** family" in report
    for name in ("base", "tuned"):
        assert (out / "runs" / name / "report.md").is_file() and (
            out / "runs" / name / "accuracy_by_skin_type.png"
        ).is_file()
    assert (out / "top1_difference_by_skin_type.png").is_file()


def test_compare_refuses_collections_of_other_test_queries(dark_skin_pair, tmp_path, capsys):
    settings, table, better = dark_skin_pair
    test_row = next(i for i, s in enumerate(table.splits) if s == "test" and table.primary[i])
    keep = [i for i in range(len(table)) if i != test_row]
    fewer = better.rows(keep)
    with pytest.raises(ScinSearchError, match="different test queries") as caught:
        compare_runs({"a": Run(table, "m"), "b": Run(fewer, "m")}, bootstrap=0)
    assert "\n" not in str(caught.value)
    store = ["--qdrant-path", str(settings.qdrant_path), "--out", str(tmp_path / "x")]
    for arguments, message in (
        (["--collection", "base"], "at least two"),
        (["--collection", "base", "--collection", "base"], "once"),
        (["--collection", "base", "--collection", "missing"], "does not exist"),
    ):
        code = main(["compare", *store, *arguments])
        err = capsys.readouterr().err
        assert code == 1 and message in err and err.count("\n") == 1, (arguments, err)


def test_small_groups_get_wilson_intervals_and_say_too_few_cases():
    table = table_from_points(planted_points(PlantedSpace(seed=5), 300, seed=6))
    result = evaluate_table(table, model="m", collection="c", bootstrap=200)
    small = [
        (field, group, block)
        for field, groups in result.metrics["breakdowns"].items()
        for group, block in groups.items()
        if block["cases"] < m.MIN_BOOTSTRAP_CASES
    ]
    assert small, "the planted test split must have small groups"
    clusters = result.per_query.clusters
    for field, group, block in small:
        subset = np.array(result.per_query.groups[field], dtype=object) == group
        for system, entries in block["metrics"].items():
            for metric, entry in entries.items():
                assert entry["note"] == "too few cases"
                if entry["value"] is None or metric == "macro_auc":
                    continue
                values = result.per_query.systems[system].values[metric]
                trials = len(np.unique(clusters[subset & ~np.isnan(values)]))
                low, high = proportion_confint(entry["value"] * trials, trials, alpha=0.05, method="wilson")
                assert entry["ci95"] == pytest.approx([low, high])
                assert entry["ci95"][1] - entry["ci95"][0] > 0.05  # never zero-width from a handful of cases
    large = next(b for g in result.metrics["breakdowns"].values() for b in g.values() if b["cases"] >= 10)
    assert "note" not in large["metrics"]["knn_majority"]["top1_accuracy"]

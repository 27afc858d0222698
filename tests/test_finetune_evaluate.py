"""`scinsearch evaluate --adapter`: frozen vs adapted on the test split, side by side, with paired intervals;
the numbers are the ordinary evaluation's, computed on transformed vectors; leaks and mismatches refused."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from scinsearch.cli import main
from scinsearch.errors import ScinSearchError
from scinsearch.evaluation import evaluate_table
from scinsearch.evaluation.compare import compare_tables, evaluate_adapter, verdict_of
from scinsearch.finetune.config import AdapterConfig
from scinsearch.store import CollectionInfo, open_store
from scinsearch.testing.planted import PlantedSpace, planted_points, planted_with_adapter
from scinsearch.vectors.adapter import Adapter
from scinsearch.vectors.neighbours import table_from_points

SPACE = PlantedSpace(seed=11)
MODEL = "planted-model"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    points = planted_points(SPACE, 300, seed=12)
    settings, adapter_dir = planted_with_adapter(tmp_path_factory.mktemp("compare"), points, AdapterConfig(rank=16))
    other = open_store(settings.replace(collection="wide"))
    other.create(CollectionInfo(MODEL, SPACE.dim * 2))
    other.close()
    return settings, table_from_points(points), adapter_dir


def test_the_comparison_is_the_ordinary_evaluation_of_both_vector_sets(setup, tmp_path):
    settings, table, adapter_dir = setup
    adapter = Adapter.load(adapter_dir)
    comparison = evaluate_adapter(settings, adapter, k=10, bootstrap=200, seed=1, out_dir=tmp_path / "report")
    independent = evaluate_table(
        dataclasses.replace(table, vectors=adapter.transform(table.vectors)),
        model=MODEL,
        collection="planted",
        k=10,
        bootstrap=0,
    )
    runs = comparison.metrics["runs"]
    for system in ("suggestions", "knn_majority"):
        assert runs["adapted"]["metrics"][system]["top1_accuracy"]["value"] == pytest.approx(
            independent.metrics["metrics"][system]["top1_accuracy"]["value"]
        )
    assert runs["frozen"]["counts"]["queries_by_split"] == {"test": runs["frozen"]["counts"]["queries"]}
    top1 = comparison.metrics["difference"]["overall"]["knn_majority"]["top1_accuracy"]
    frozen = runs["frozen"]["metrics"]["knn_majority"]["top1_accuracy"]["value"]
    adapted = runs["adapted"]["metrics"]["knn_majority"]["top1_accuracy"]["value"]
    assert top1["value"] == pytest.approx(adapted - frozen) and adapted > frozen + 0.3
    assert top1["verdict"] == "better" and top1["ci95"][0] > 0
    groups = comparison.metrics["difference"]["breakdowns"]["dermatologist_skin_type_group"]
    assert set(groups) == set(runs["frozen"]["breakdowns"]["dermatologist_skin_type_group"])


def test_report_shows_frozen_and_adapted_side_by_side(setup, tmp_path):
    settings, _, adapter_dir = setup
    out = tmp_path / "report"
    evaluate_adapter(settings, Adapter.load(adapter_dir), bootstrap=100, out_dir=out)
    metrics = json.loads((out / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert metrics["kind"] == "adapter-comparison" and set(metrics["runs"]) == {"frozen", "adapted"}
    assert metrics["adapter"]["adapter_id"] == Adapter.load(adapter_dir).id and metrics["bootstrap"]["paired"]
    report = (out / "report.md").read_text()
    assert "| system | metric | frozen | adapted | difference | verdict |" in report
    assert "## By skin type" in report and "Dermatologist skin-type group" in report
    assert "within the interval" in report  # explained in the notes, and used where a difference is not clear
    for run in ("frozen", "adapted"):
        assert (out / run / "report.md").is_file() and (out / run / "accuracy_by_skin_type.png").is_file()


def test_verdict_reads_the_adjusted_p_value():
    tested = {"cases": 50, "p_value": 0.001}
    assert verdict_of("top1_accuracy", {"value": 0.1, "p_adjusted": 0.01, **tested}) == "better"
    assert verdict_of("top1_accuracy", {"value": -0.1, "p_adjusted": 0.01, **tested}) == "worse"
    assert verdict_of("top1_accuracy", {"value": 0.1, "p_adjusted": 0.2, **tested}) == "within the interval"
    assert verdict_of("coverage", {"value": 0.1, "p_adjusted": 0.01, **tested}) == "higher"  # not a quality
    assert verdict_of("coverage", {"value": -0.1, "p_adjusted": 0.01, **tested}) == "lower"
    assert verdict_of("top1_accuracy", {"value": 0.05, "cases": 50}) == "no interval"
    assert verdict_of("top1_accuracy", {"value": None, "cases": 50}) == "undefined"
    assert verdict_of("top1_accuracy", {"value": 1.0, "cases": 1}) == "too few cases"  # a degenerate bootstrap


def test_identity_adapter_differs_by_nothing(setup):
    """An adapter that has not moved (epoch 0) must give identical numbers and a zero difference."""
    _, table, adapter_dir = setup
    adapter = Adapter.load(adapter_dir)
    adapter.module.up.data.zero_()
    comparison = compare_tables(table, adapter, model=MODEL, collection="planted", bootstrap=50)
    for system, block in comparison.metrics["difference"]["overall"].items():
        for metric, entry in block.items():
            assert entry["value"] in (0.0, None), (system, metric)


def test_an_adapter_that_saw_a_test_case_is_refused(setup):
    _, table, adapter_dir = setup
    adapter = Adapter.load(adapter_dir)
    test_case = next(ids[0] for ids, split in zip(table.case_ids, table.splits) if split == "test")
    adapter.record = {**adapter.record, "train_case_ids": [*adapter.record["train_case_ids"], test_case]}
    with pytest.raises(ScinSearchError, match="1 test-split case") as caught:
        compare_tables(table, adapter, model=MODEL, collection="planted", bootstrap=0)
    assert "\n" not in str(caught.value)


def test_cli_evaluate_adapter_and_its_refusals(setup, tmp_path, capsys):
    settings, _, adapter_dir = setup
    store = ["--qdrant-path", str(settings.qdrant_path)]
    out = tmp_path / "cli"
    code = main(
        [
            "evaluate",
            *store,
            "--collection",
            "planted",
            "--adapter",
            str(adapter_dir),
            "--out",
            str(out),
            "--bootstrap",
            "50",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "frozen" in captured.out and "adapted" in captured.out and "difference" in captured.out
    assert (out / "report.md").is_file() and (out / "metrics.json").is_file()
    for arguments, message in [
        (["--collection", "planted", "--leave-case-out"], "test split only"),
        (["--collection", "wide"], f"{SPACE.dim}-d vectors of 'planted-model'"),
        (["--collection", "missing"], "does not exist"),
    ]:
        code = main(["evaluate", *store, *arguments, "--adapter", str(adapter_dir), "--out", str(tmp_path / "x")])
        err = capsys.readouterr().err
        assert code == 1 and message in err and err.count("\n") == 1, (arguments, err)
    code = main(["evaluate", *store, "--collection", "planted", "--adapter", str(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "no adapter.json" in err and err.count("\n") == 1
    assert np.isfinite(json.loads((out / "metrics.json").read_text())["runs"]["adapted"]["dim"])

"""`scinsearch calibrate` on planted data whose right answer is known: thresholds for a planted precision,
a planted gradability direction (checked against scikit-learn), the nothing-alike cut against brute force,
the record stored with the collection on both backends, refused for another model, and used by evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from scinsearch import suggest
from scinsearch.calibration import METADATA_KEY, Calibration, GradabilityProbe, calibration_of
from scinsearch.calibration import thresholds as th
from scinsearch.calibration.calibrate import calibrate_collection, calibrate_table
from scinsearch.calibration.probe import fit_logistic, sigmoid, train_probe
from scinsearch.cli import main
from scinsearch.errors import ScinSearchError
from scinsearch.evaluation import evaluate_collection
from scinsearch.schema import point_id_for
from scinsearch.search import Searcher
from scinsearch.settings import Settings
from scinsearch.store import CollectionInfo, StoredPoint, open_store
from scinsearch.suggest import suggest_conditions
from scinsearch.vectors.neighbours import table_from_points

CONDITIONS = ["Eczema", "Urticaria", "Tinea", "Psoriasis", "Insect Bite"]
DIM = 16
GRADABLE_AXIS = DIM - 1  # the planted direction: gradable cases lean one way along it, the others the other way


def split_of(case: int) -> str:
    return "train" if case % 10 < 7 else ("val" if case % 10 < 8 else "test")


def planted_points(cases: int = 300, seed: int = 0, ungradable: float = 0.3, wrong: float = 0.3):
    """Cases clustered by condition (axes 0-4); a share carry the next condition's label with noisier vectors
    (so similarity predicts correctness); gradability planted along GRADABLE_AXIS."""
    rng = np.random.default_rng(seed)
    points = []
    for case in range(cases):
        truth = case % len(CONDITIONS)
        mislabelled = rng.random() < wrong
        label = CONDITIONS[(truth + 1) % len(CONDITIONS)] if mislabelled else CONDITIONS[truth]
        gradable = bool(rng.random() >= ungradable)
        centre = np.eye(DIM)[truth] + rng.normal(0, 0.6 if mislabelled else 0.3, DIM)
        centre[GRADABLE_AXIS] = (0.6 if gradable else -0.6) + rng.normal(0, 0.3)
        for view in range(1 + case % 3):
            image_id = f"img{case}-{view}"
            payload = {
                "image_id": image_id,
                "case_id": f"case{case}",
                "case_ids": [f"case{case}"],
                "condition": label,
                "weighted_labels": {label: 1.0},
                "all_conditions": [label],
                "gradable": gradable,
                "split": split_of(case),
            }
            vector = (centre + rng.normal(0, 0.05, DIM)).astype(np.float32)
            points.append(StoredPoint(point_id_for(image_id), payload, vector))
    return points


def random_labels(points, seed: int = 9):
    """The same points with labels drawn at random per case: no thresholds can make suggestions right."""
    rng = np.random.default_rng(seed)
    labels = {p.payload["case_id"]: str(rng.choice(CONDITIONS)) for p in points}
    for point in points:
        label = labels[point.payload["case_id"]]
        point.payload.update(condition=label, weighted_labels={label: 1.0}, all_conditions=[label])
    return points


def write_collection(settings: Settings, points, model: str = "planted-model", extra: dict | None = None) -> Settings:
    store = open_store(settings)
    store.create(CollectionInfo(model, DIM, dict(extra or {})))
    store.upsert(points)
    store.finish_writes()
    store.close()
    return settings


# Thresholds, on planted per-query statistics -------------------------------------------------------------


def stats(best, agreement=None, support=None, hit=None) -> th.QueryStats:
    best = np.asarray(best, dtype=float)
    n = len(best)
    return th.QueryStats(
        best,
        np.ones(n) if agreement is None else np.asarray(agreement, dtype=float),
        np.full(n, 5) if support is None else np.asarray(support),
        np.asarray(hit, dtype=bool),
    )


def test_the_similarity_threshold_is_where_the_planted_precision_is_met():
    best = np.arange(100) / 100
    planted = stats(best, hit=best >= 0.70)  # right exactly from similarity 0.70 up
    exact = th.choose(planted, 1.0, max_support=5)
    assert exact.min_similarity == pytest.approx(0.70) and exact.coverage == pytest.approx(0.30)
    assert exact.precision == 1.0
    loose = th.choose(planted, 0.9, max_support=5)  # 30 right + 3 wrong = 90.9%; a 4th wrong gives 88.2%
    assert loose.min_similarity == pytest.approx(0.67) and loose.confident == 33 and loose.hits == 30


def test_agreement_and_support_thresholds_are_found_when_they_decide():
    n = 100
    agreement = np.arange(n) / n
    by_agreement = th.choose(stats(np.full(n, 0.9), agreement=agreement, hit=agreement >= 0.5), 1.0, max_support=5)
    assert by_agreement.min_agreement == pytest.approx(0.5) and by_agreement.coverage == pytest.approx(0.5)
    support = np.arange(n) % 5 + 1
    by_support = th.choose(stats(np.full(n, 0.9), support=support, hit=support >= 3), 1.0, max_support=5)
    assert by_support.min_support == 3 and by_support.coverage == pytest.approx(0.6)


def test_an_unreachable_target_is_a_one_line_error_that_carries_the_best_point():
    best = np.arange(100) / 100
    with pytest.raises(th.TargetNotReached, match="at most") as error:
        th.choose(stats(best, hit=np.arange(100) % 2 == 0), 0.95, max_support=5)
    assert "\n" not in str(error.value)
    # every 2nd query right: at 20 suggestions (the minimum), the best precision is 10/20 = 50%
    assert error.value.best.precision == pytest.approx(0.5) and error.value.best.confident >= 20


def test_the_confident_mask_is_the_suggestion_rule():
    """The vectorised sweep must decide exactly as `suggest_conditions` (the rule search uses) does."""
    rng = np.random.default_rng(3)
    neighbours, label_sets = [], []
    for _ in range(150):
        pairs = [
            (float(rng.uniform(0.2, 1.0)), {} if rng.random() < 0.15 else {str(rng.choice(CONDITIONS[:3])): 1.0})
            for _ in range(int(rng.integers(0, 6)))
        ]
        neighbours.append(pairs)
        label_sets.append(frozenset([str(rng.choice(CONDITIONS[:3]))]))
    computed = th.query_stats(neighbours, label_sets)
    for thresholds in ({"min_similarity": 0.6, "min_agreement": 0.35, "min_support": 2}, FIXED_LOOSE, FIXED_STRICT):
        expected = [suggest_conditions(pairs, **thresholds).confident for pairs in neighbours]
        assert th.confident_mask(computed, **thresholds).tolist() == expected
    for pairs, labels, hit in zip(neighbours, label_sets, computed.hit):
        items = suggest_conditions(pairs).items
        assert hit == bool(items and items[0].condition in labels)


FIXED_LOOSE = {"min_similarity": 0.3, "min_agreement": 0.1, "min_support": 1}
FIXED_STRICT = {"min_similarity": 0.8, "min_agreement": 0.6, "min_support": 3}


def test_the_tradeoff_curve_falls_as_coverage_rises_and_bounds_every_choice():
    rng = np.random.default_rng(5)
    best = rng.uniform(0, 1, 400)
    planted = stats(best, agreement=rng.uniform(0, 1, 400), hit=rng.random(400) < best)
    curve = [r for r in th.frontier(planted, max_support=5) if r["precision"] is not None]
    precisions = [r["precision"] for r in curve]
    assert precisions == sorted(precisions), "demanding more coverage never buys precision"
    chosen = th.choose(planted, 0.8, max_support=5)
    at_level = max(
        (r for r in curve if r["coverage_at_least"] <= chosen.coverage), key=lambda r: r["coverage_at_least"]
    )
    assert at_level["precision"] >= chosen.precision


# The gradability probe -----------------------------------------------------------------------------------


def test_the_logistic_fit_is_scikit_learns():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 6))
    y = (x @ rng.normal(size=6) + rng.normal(0, 1.0, 400)) > 0
    ours = fit_logistic(np.column_stack([x, np.ones(400)]), y, l2=2.0, penalise=np.r_[np.ones(6), 0.0])
    theirs = LogisticRegression(C=1 / 2.0, tol=1e-12, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(ours[:-1], theirs.coef_[0], atol=1e-5)
    assert ours[-1] == pytest.approx(theirs.intercept_[0], abs=1e-5)


def test_the_probe_finds_a_planted_direction_and_is_calibrated():
    rng = np.random.default_rng(2)
    direction = np.eye(8)[2]
    vectors = rng.normal(size=(4000, 8))
    truth = sigmoid(2.5 * vectors @ direction + 0.8)  # the true P(gradable | vector)
    gradable = rng.random(4000) < truth
    probe = train_probe(vectors, gradable, [f"case{i // 2}" for i in range(4000)], "planted-model")
    weights = probe.weights / np.linalg.norm(probe.weights)
    assert weights @ direction > 0.97
    fresh = rng.normal(size=(4000, 8))
    predicted, true = probe.probability(fresh), sigmoid(2.5 * fresh @ direction + 0.8)
    assert np.mean(np.abs(predicted - true)) < 0.04, "Platt scaling: 'probability 0.3' means about 3 in 10"
    held_out = probe.training
    assert held_out["held_out_images"] > 500 and held_out["held_out_auc"] > 0.8


def test_too_few_ungradable_images_train_no_probe():
    vectors = np.random.default_rng(0).normal(size=(100, 4))
    labels = np.arange(100) >= 5
    with pytest.raises(ScinSearchError, match="too few images to learn gradability"):
        train_probe(vectors, labels, [str(i) for i in range(100)], "m")


def test_a_probe_or_calibration_of_another_model_is_refused():
    table = table_from_points(planted_points())
    calibration = calibrate_table(table, "planted-model", DIM, 0.5, bootstrap=20)
    document = calibration.to_dict()
    assert Calibration.from_dict(json.loads(json.dumps(document)), "planted-model", DIM).probe is not None
    for model, dim in (("another-model", DIM), ("planted-model", DIM + 1)):
        with pytest.raises(ScinSearchError, match="run `scinsearch calibrate` on this collection"):
            Calibration.from_dict(document, model, dim)
        with pytest.raises(ScinSearchError, match="gradability probe was trained on"):
            GradabilityProbe.from_dict(document["probe"], model, dim)


def test_a_searcher_refuses_a_collection_carrying_another_models_calibration(tmp_path, capsys):
    table = table_from_points(planted_points())
    foreign = calibrate_table(table, "another-model", DIM, 0.5, bootstrap=20).to_dict()
    settings = write_collection(
        Settings(qdrant_path=tmp_path / "q", collection="c", model="planted-model"),
        planted_points(),
        extra={METADATA_KEY: foreign},
    )

    class Embedder:
        model_name, dim = "planted-model", DIM

    with pytest.raises(ScinSearchError, match="derived from 16-d vectors of 'another-model'"):
        Searcher(settings, embedder=Embedder())
    assert main(["evaluate", "--qdrant-path", str(tmp_path / "q"), "--collection", "c", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.count("\n") == 1


# The nothing-alike cut -----------------------------------------------------------------------------------


def test_the_nothing_alike_cut_is_the_percentile_of_brute_force_nearest_other_cases():
    points = planted_points(cases=120)
    table = table_from_points(points)
    train = [p for p in points if p.payload["split"] == "train"]
    unit = {p.payload["image_id"]: p.vector / np.linalg.norm(p.vector) for p in train}
    nearest = [
        max(
            float(unit[p.payload["image_id"]] @ unit[q.payload["image_id"]])
            for q in train
            if q.payload["case_id"] != p.payload["case_id"]
        )
        for p in train
    ]
    calibration = calibrate_table(table, "planted-model", DIM, 0.5, percentile=5.0, bootstrap=20)
    assert calibration.cut == pytest.approx(float(np.percentile(nearest, 5.0)), abs=1e-5)
    assert calibration.nothing_alike["images"] == len(train)


# The whole command, on both backends -----------------------------------------------------------------------


def test_calibrate_records_the_calibration_with_the_collection(store_settings, store):
    store.create(CollectionInfo("planted-model", DIM, {"image_root": "/data/scin"}))
    store.upsert(planted_points())
    store.finish_writes()
    result = calibrate_collection(store_settings, target_precision=0.8, bootstrap=50, store=store)
    stored = calibration_of(store.info())
    assert store.info().extra["image_root"] == "/data/scin", "the rest of the record is kept"
    assert stored.to_dict() == result.calibration.to_dict()
    train = stored.thresholds["train"]
    assert train["precision"] >= 0.8 and 0 < train["coverage"] <= 1 and stored.thresholds["k"] == 5
    assert stored.probe is not None and stored.probe.training["held_out_auc"] > 0.9, "the planted direction"


def test_evaluate_uses_and_checks_the_calibration(tmp_path):
    settings = write_collection(Settings(qdrant_path=tmp_path / "q", collection="c"), planted_points())
    calibration = calibrate_collection(settings, target_precision=0.8, bootstrap=50).calibration
    out = tmp_path / "report"
    metrics = evaluate_collection(settings, k=10, bootstrap=50, out_dir=out).metrics
    used = metrics["suggestion_thresholds"]
    assert used["source"] == "calibrated" and used["neighbours"] == calibration.neighbours == 5, "not k=10"
    assert {k: used[k] for k in calibration.suggestion_options()} == calibration.suggestion_options()
    block = metrics["calibration"]
    assert block["calibrated"]
    assert block["suggestion_thresholds"]["calibrated"]["thresholds"] == calibration.suggestion_options()
    test = [p for p in planted_points() if p.payload["split"] == "test"]
    vectors = np.stack([p.vector for p in test]) / np.linalg.norm(np.stack([p.vector for p in test]), axis=1)[:, None]
    labels = [p.payload["gradable"] for p in test]
    expected = roc_auc_score(labels, calibration.probe.probability(vectors))
    assert block["gradability_probe"]["auc"]["value"] == pytest.approx(expected, abs=1e-9)
    low, high = block["gradability_probe"]["auc"]["ci95"]
    assert low <= expected <= high and expected > 0.9
    assert 0 <= block["nothing_alike"]["flagged"]["value"] < 0.2
    report = (out / "report.md").read_text()
    assert "Suggestion thresholds in force above: **calibrated**" in report and "ROC AUC" in report
    assert (out / "suggestion_tradeoff.png").stat().st_size > 5000


def test_the_cli_calibrates_writes_a_file_and_a_dry_run_records_nothing(tmp_path, capsys):
    settings = write_collection(Settings(qdrant_path=tmp_path / "q", collection="c"), planted_points())
    base = ["calibrate", "--qdrant-path", str(settings.qdrant_path), "--collection", "c"]
    assert main(base + ["--dry-run"]) == 0
    assert "dry run: nothing written" in capsys.readouterr().out
    noise = write_collection(Settings(qdrant_path=tmp_path / "q", collection="noise"), random_labels(planted_points()))
    assert main(base[:-1] + ["noise", "--target-precision", "0.95", "--strict"]) == 1
    assert "lower --target-precision" in capsys.readouterr().err
    for written in (settings, noise):
        store = open_store(written)
        assert calibration_of(store.info()) is None, "neither the dry run nor the failed run recorded anything"
        store.close()
    out_file = tmp_path / "calibration.json"
    assert main(base + ["--target-precision", "0.8", "--out", str(out_file)]) == 0
    printed = capsys.readouterr().out
    assert "min_similarity" in printed and "gradability probe: held-out AUC" in printed
    assert json.loads(out_file.read_text())["schema"] == "scinsearch.calibration/1"
    with Searcher(settings, embedder=type("E", (), {"model_name": "planted-model", "dim": DIM})()) as searcher:
        assert searcher.calibration.to_dict() == json.loads(out_file.read_text())
    assert main(["info", "--qdrant-path", str(settings.qdrant_path), "--collection", "c"]) == 0
    shown = capsys.readouterr().out
    assert "calibration: 20" in shown and "for 80% precision" in shown and "weights" not in shown


def test_a_calibration_is_bound_to_the_adapter_its_vectors_came_from(tmp_path):
    """`finetune apply` writes transformed vectors to a new collection: the source's calibration (another vector
    space) is not copied there, and a record of another space is refused."""
    from types import SimpleNamespace

    from scinsearch.finetune.apply import prepare_target
    from scinsearch.store.record import ADAPTER_ID

    document = calibrate_table(table_from_points(planted_points()), "planted-model", DIM, 0.5, bootstrap=20).to_dict()
    with pytest.raises(
        ScinSearchError, match="vectors without an adapter, this collection holds vectors of the adapter"
    ):
        calibration_of(CollectionInfo("planted-model", DIM, {METADATA_KEY: document, ADAPTER_ID: "f" * 64}))
    source = CollectionInfo("planted-model", DIM, {METADATA_KEY: document, "image_root": "/data"})
    target = open_store(Settings(qdrant_path=tmp_path / "q", collection="adapted"))
    adapter = SimpleNamespace(id="f" * 64, folder=tmp_path / "adapter")
    prepare_target(target, source, adapter, "planted", recreate=False)
    assert METADATA_KEY not in target.info().extra and target.info().extra["image_root"] == "/data"
    target.close()


def test_the_calibration_moves_with_the_collection_through_parquet_and_copy(tmp_path, capsys):
    from scinsearch.transfer import copy_collection, export_parquet, import_parquet

    settings = write_collection(Settings(qdrant_path=tmp_path / "q", collection="c"), planted_points())
    calibrated = calibrate_collection(settings, target_precision=0.8, bootstrap=20).calibration.to_dict()
    source = open_store(settings)
    export_parquet(source, tmp_path / "c.parquet", progress=False)
    copied = open_store(Settings(qdrant_location=":memory:", collection="copied"))
    copy_collection(source, copied, progress=False)
    source.close()
    imported = open_store(Settings(qdrant_path=tmp_path / "q2", collection="imported"))
    import_parquet(tmp_path / "c.parquet", imported, progress=False)
    for store in (copied, imported):
        assert calibration_of(store.info()).to_dict() == calibrated
        store.close()


# When no thresholds reach the target (issue 22) -------------------------------------------------------------


def noisy_points():
    return random_labels(planted_points())


def test_calibrate_without_usable_signal_turns_suggestions_off_and_still_calibrates_the_rest(tmp_path, capsys):
    """Labels at random: no thresholds reach 95 %. calibrate exits 0 with one warning line, records
    suggestions as off (best precision + coverage) with the probe and the cut; every answer then abstains
    in plain words, text queries too."""
    settings = write_collection(Settings(qdrant_path=tmp_path / "q", collection="noise"), noisy_points())
    args = ["calibrate", "--qdrant-path", str(settings.qdrant_path), "--collection", "noise"]
    assert main(args + ["--target-precision", "0.95"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "suggestions are off" in warnings[0] and "--strict" in warnings[0]
    assert "suggestions: OFF" in captured.out
    store = open_store(settings)
    stored = calibration_of(store.info())
    store.close()
    assert stored.suggestions_off and stored.thresholds["suggestions"] == "off"
    best = stored.thresholds["best"]
    assert best is not None and 0 < best["precision"] < 0.95 and 0 < best["coverage"] <= 1
    assert stored.probe is not None and stored.cut == pytest.approx(stored.nothing_alike["cut"])
    assert main(["info", "--qdrant-path", str(settings.qdrant_path), "--collection", "noise"]) == 0
    assert "suggestions OFF" in capsys.readouterr().out

    embedder = type("E", (), {"model_name": "planted-model", "dim": DIM})()
    with Searcher(settings, embedder=embedder) as searcher:
        point = next(p for p in planted_points() if p.payload["split"] == "test")
        result = searcher.search_like(point.payload["image_id"])
        answer = json.loads(json.dumps(result.to_dict(), allow_nan=False))["suggestions"]  # strict JSON, as served
        assert not answer["confident"] and answer["conditions"] == [] and answer["thresholds_source"] == "off"
        assert answer["reason"] == suggest.SUGGESTIONS_OFF and "suggestions are off" in answer["reason"]
        assert result.quality.get("similarity").verdict in ("pass", "warn"), "the cut is calibrated"
        vector = point.vector / np.linalg.norm(point.vector)
        for kind in ("image", "text"):
            other = searcher.search_vector(vector, {"kind": kind}).suggestions
            assert not other.confident and other.reason == suggest.SUGGESTIONS_OFF


def test_strict_keeps_the_failure_and_records_nothing(tmp_path):
    settings = write_collection(Settings(qdrant_path=tmp_path / "q", collection="noise"), noisy_points())
    with pytest.raises(ScinSearchError, match="lower --target-precision"):
        calibrate_collection(settings, target_precision=0.95, bootstrap=20, strict=True)
    store = open_store(settings)
    assert calibration_of(store.info()) is None
    store.close()


def test_evaluate_measures_suggestions_off_as_no_suggestion(tmp_path):
    settings = write_collection(Settings(qdrant_path=tmp_path / "q", collection="n"), noisy_points())
    calibration = calibrate_collection(settings, target_precision=0.95, bootstrap=20).calibration
    assert calibration.suggestions_off
    metrics = evaluate_collection(settings, k=10, bootstrap=20, out_dir=tmp_path / "report").metrics
    calibrated = metrics["calibration"]["suggestion_thresholds"]["calibrated"]
    assert calibrated["suggestions_off"] and calibrated["suggestions"] == 0
    assert metrics["metrics"]["suggestions"]["coverage"]["value"] == 0
    assert "not reached: suggestions off" in (tmp_path / "report" / "report.md").read_text()

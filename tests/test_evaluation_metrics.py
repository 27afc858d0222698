"""Evaluation arithmetic on cases small enough to compute by hand, and the exclusion rule on tiny tables."""

from __future__ import annotations

import numpy as np
import pytest

from scinsearch import rules
from scinsearch.errors import ScinSearchError
from scinsearch.store import StoredPoint
from scinsearch.vectors import metrics as m
from scinsearch.vectors.neighbours import case_clusters, exclusions, nearest, select, table_from_points


def test_top_k_and_hit_by_hand():
    rankings = [["A", "B", "C"], ["B", "A"], ["C"], []]
    truths = ["A", "A", "B", "A"]
    assert m.top_k_correct(rankings, truths, 1).tolist() == [1, 0, 0, 0]
    assert m.top_k_correct(rankings, truths, 3).tolist() == [1, 1, 0, 0]
    labels = [{"A"}, {"A", "B"}, {"B", "D"}, {"A"}]
    assert m.hit_at_k(rankings, labels, 1).tolist() == [1, 1, 0, 0]
    assert m.hit_at_k(rankings, labels, 3).tolist() == [1, 1, 0, 0]
    assert m.top_k_correct([["A"]], [None], 1).tolist() == [0]


def test_neighbour_recall_by_hand():
    neighbours = [["B", "A", "A"], ["B", "B", "C"], ["A"]]
    assert m.neighbour_recall(neighbours, ["A", "A", "A"], 1).tolist() == [0, 0, 1]
    assert m.neighbour_recall(neighbours, ["A", "A", "A"], 2).tolist() == [1, 0, 1]


def test_majority_vote_counts_votes_then_similarity_then_name():
    assert m.majority_vote(["A", "B", "B"], [0.9, 0.5, 0.4]) == ["B", "A"]
    assert m.majority_vote(["A", "B"], [0.5, 0.9]) == ["B", "A"]  # tie in votes: closer wins
    assert m.majority_vote(["B", "A"], [0.5, 0.5]) == ["A", "B"]  # full tie: by name
    assert m.majority_vote([None, "A"], [0.9, 0.1]) == ["A"]
    assert m.vote_shares(["A", "B", "B", None]) == {"A": pytest.approx(1 / 3), "B": pytest.approx(2 / 3)}


def test_auc_by_hand_with_ties_and_weights():
    scores, positives = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], dtype=bool)
    # pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3 of 4
    assert m.weighted_auc(scores, positives) == pytest.approx(0.75)
    # all tied: each pair counts one half
    assert m.weighted_auc(np.ones(4), positives) == pytest.approx(0.5)
    # positive tied with one of two negatives: (1 + 0.5) / 2
    assert m.weighted_auc(np.array([0.2, 0.5, 0.5]), np.array([0, 0, 1], bool)) == pytest.approx(0.75)
    # weight 2 on the negative 0.4 is that negative counted twice: pairs 1+0+0+1+1+1 = 4 of 6
    assert m.weighted_auc(scores, positives, np.array([1, 2, 1, 1.0])) == pytest.approx(4 / 6)
    assert np.isnan(m.weighted_auc(scores, np.zeros(4, bool)))
    batch = m.weighted_auc(scores, positives, np.array([[1, 1, 1, 1.0], [1, 2, 1, 1], [0, 0, 1, 1]]))
    assert batch[:2] == pytest.approx([0.75, 4 / 6]) and np.isnan(batch[2])


def test_macro_auc_skips_undefined_classes():
    scores = np.array([[0.1, 1.0, 0.3], [0.4, 1.0, 0.3], [0.35, 0.0, 0.3], [0.8, 0.0, 0.3]])
    positives = np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0]], dtype=bool)
    macro, per_class = m.macro_auc(scores, positives)
    # class 1: positive 1.0 vs negatives 1.0 (tie), 0, 0 -> (0.5 + 1 + 1) / 3; class 2 has no positive
    assert per_class[0] == pytest.approx(0.75) and per_class[1] == pytest.approx(2.5 / 3) and np.isnan(per_class[2])
    assert macro == pytest.approx((0.75 + 2.5 / 3) / 2)


def test_cluster_bootstrap_draws_whole_cases():
    clusters = np.array([7, 7, 7, 3, 9])
    weights = m.cluster_weights(clusters, resamples=200, seed=1)
    assert weights.shape == (200, 5)
    assert np.all(weights[:, 0] == weights[:, 1]) and np.all(weights[:, 1] == weights[:, 2])
    assert np.all(weights[:, [0, 3, 4]].sum(axis=1) == 3)  # as many cases drawn as there are
    assert np.array_equal(weights, m.cluster_weights(clusters, resamples=200, seed=1))


def test_mean_with_interval_ignores_undefined_and_brackets_the_mean():
    values = np.array([1, 0, np.nan, 1, 1, 0, 1, 1.0])
    weights = m.cluster_weights(np.arange(8), 500, seed=0)
    value, (low, high) = m.mean_with_interval(values, weights)
    assert value == pytest.approx(5 / 7)
    assert low < value < high
    assert m.mean_with_interval(np.array([np.nan]), weights[:, :1]) == (None, None)
    assert m.interval(np.array([np.nan])) is None


def test_frequency_and_most_common():
    assert m.frequency_ranking(["B", "A", "B", None, "C", "A", "B"]) == ["B", "A", "C"]
    assert m.most_common_conditions([{"A", "B"}, {"B"}, {"C", "B"}, {"A"}], 2) == ["B", "A"]


def point(
    pid: str,
    cases: list[str],
    condition: str | None,
    vector,
    split: str = "train",
    image_id: str | None = None,
    gradable=True,
) -> StoredPoint:
    return StoredPoint(
        pid,
        {
            "image_id": image_id or pid,
            "case_id": cases[0],
            "case_ids": cases,
            "condition": condition,
            "weighted_labels": {condition: 1.0} if condition else {},
            "gradable": gradable,
            "split": split,
        },
        np.asarray(vector, dtype=np.float32),
    )


def test_own_case_and_shared_image_and_same_image_are_never_neighbours():
    table = table_from_points(
        [
            point("q", ["c2"], "A", [1, 0]),
            point("shared", ["c1", "c2"], "A", [1, 0.01]),  # the same photo filed under c1 and the query's c2
            point("twin", ["c9"], "A", [1, 0.02], image_id="q"),  # the query's image under another case
            point("c1-other", ["c1"], "B", [1, 0.1]),  # another view of c1: a different case, allowed
            point("far", ["c3"], "A", [0, 1]),
        ]
    )
    selection = select(table, "leave-case-out")
    hidden = exclusions(table, selection)
    query = list(selection.queries).index(0)
    ref = list(selection.reference)
    assert sorted(ref[pos] for pos in hidden[query]) == [0, 1, 2]  # itself, the shared photo, the twin
    found = nearest(table, selection, hidden, k=2, per_case=False)
    assert [ref[pos] for pos in found.indices[query]] == [3, 4]
    leaky = exclusions(table, selection, exclude_own_case=False)
    assert [ref[pos] for pos in leaky[query]] == [0]


def test_one_neighbour_per_case_keeps_the_closest_view():
    table = table_from_points(
        [
            point("q", ["c0"], "A", [1, 0], split="test"),
            point("a1", ["c1"], "B", [1, 0.05]),
            point("a2", ["c1"], "B", [1, 0.06]),
            point("b1", ["c2"], "A", [1, 0.5]),
        ]
    )
    selection = select(table, "split")
    hidden = exclusions(table, selection)
    per_image = nearest(table, selection, hidden, k=2, per_case=False)
    per_case = nearest(table, selection, hidden, k=2, per_case=True)

    def names(found):
        return [table.image_ids[selection.reference[p]] for p in found.indices[0]]

    assert names(per_image) == ["a1", "a2"]
    assert names(per_case) == ["a1", "b1"]
    assert per_case.similarities[0, 0] == pytest.approx(1 / np.sqrt(1 + 0.05**2), abs=1e-6)


def test_one_neighbour_per_case_is_the_search_rule_for_shared_images():
    """Image s is filed under c1 and c2, image y under c2 and c3: after x (c3) and s (c1, c2), y would show
    c2 and c3 again, but z (c4) is a new case. Evaluation keeps what a search shows: x, s, z."""
    table = table_from_points(
        [
            point("q", ["c0"], "A", [1, 0], split="test"),
            point("x", ["c3"], "A", [1, 0.01]),
            point("s", ["c1", "c2"], "B", [1, 0.02]),
            point("y", ["c2", "c3"], "B", [1, 0.03]),
            point("z", ["c4"], "A", [1, 0.5]),
        ]
    )
    selection = select(table, "split")
    found = nearest(table, selection, exclusions(table, selection), k=3, per_case=True)
    assert [table.image_ids[selection.reference[p]] for p in found.indices[0]] == ["x", "s", "z"]
    ranked = [table.case_ids[selection.reference[p]] for p in (0, 1, 2, 3)]  # x, s, y, z: most similar first
    assert rules.one_per_case(ranked) == [0, 1, 3]


def test_too_few_neighbours_are_padded():
    table = table_from_points([point("q", ["c0"], "A", [1, 0], split="test"), point("r", ["c1"], "A", [0, 1])])
    selection = select(table, "split")
    found = nearest(table, selection, exclusions(table, selection), k=3)
    assert found.indices[0].tolist() == [0, -1, -1] and np.isnan(found.similarities[0, 1])


def test_case_clusters_join_cases_that_share_an_image():
    assert case_clusters([("a",), ("b", "a"), ("c",), ("b",)]).tolist() == [0, 0, 1, 0]


def test_selection_rules_and_errors():
    points = [
        point("t1", ["c1"], "A", [1, 0], split="test"),
        point("t2", ["c2"], "A", [1, 0], split="test", gradable=False),
        point("t3", ["c3"], None, [1, 0], split="test"),
        point("r1", ["c4"], "A", [0, 1]),
        point("r2", ["c5"], None, [0, 1]),
    ]
    table = table_from_points(points)
    selection = select(table, "split")
    assert [table.image_ids[r] for r in selection.queries] == ["t1"]  # gradable and labelled only
    assert [table.image_ids[r] for r in selection.reference] == ["r1"]  # labelled train only
    with pytest.raises(ScinSearchError, match="no labelled reference points in the train split"):
        select(table_from_points(points[:3]), "split")
    with pytest.raises(ScinSearchError, match="no labelled images of gradable cases in the test split"):
        select(table_from_points(points[3:]), "split")
    with pytest.raises(ScinSearchError, match="unknown protocol"):
        select(table, "image-split")


# The small helpers, every branch (written to kill the meaningful survivors of mutation testing) -------------


def test_score_and_positive_matrices():
    scores = m.score_matrix([{"A": 0.5, "B": 0.2}, {"C": 0.9}], ["A", "C"])
    assert scores.dtype == np.float64 and scores.tolist() == [[0.5, 0.0], [0.0, 0.9]]
    assert m.score_matrix([], ["A", "C"]).shape == (0, 2) and m.score_matrix([{"A": 1}], []).shape == (1, 0)
    assert m.score_matrix([{"A": 1}], ["A"]).dtype == np.float64  # vote counts arrive as integers
    positives = m.positive_matrix([["A", "B"], [], ["C"]], ["A", "C"])
    assert positives.dtype == bool and positives.tolist() == [[True, False], [False, False], [False, True]]
    assert m.positive_matrix([], ["A"]).shape == (0, 1) and m.positive_matrix([["A"]], []).shape == (1, 0)
    assert m.positive_matrix([], ["A"]).dtype == bool


def test_auc_takes_integer_labels_and_returns_a_float():
    scores = [0.1, 0.4, 0.35, 0.8]
    value = m.weighted_auc(scores, [0, 0, 1, 1])
    assert type(value) is float and value == pytest.approx(0.75)
    as_bools = m.weighted_auc(np.array(scores), np.array([False, False, True, True]), np.array([2.0, 1, 1, 1]))
    assert m.weighted_auc(scores, [0, 0, 1, 1], [2, 1, 1, 1]) == pytest.approx(as_bools) == pytest.approx(5 / 6)
    assert type(m.weighted_auc(np.zeros(0), np.zeros(0, bool))) is float
    assert m.weighted_auc([0.1, 0.9], [0, 1]) == 1.0 and m.weighted_auc([0.1, 0.9], [0, 1], [0.5, 0.5]) == 1.0


def test_macro_auc_without_defined_classes_is_nan_of_the_right_shape():
    scores, positives = np.ones((4, 2)), np.ones((4, 2), bool)
    macro, _ = m.macro_auc(scores, positives)
    assert type(macro) is float and np.isnan(macro)
    assert np.isnan(m.macro_auc(scores, positives, np.ones(4))[0])
    batch, _ = m.macro_auc(scores, positives, np.ones((3, 4)))
    assert batch.shape == (3,) and np.isnan(batch).all()
    assert type(m.macro_auc(np.array([[0.1], [0.9]]), np.array([[False], [True]]))[0]) is float


def test_macro_auc_interval_comes_from_the_resampled_macro_aucs():
    scores = np.array([[0.1, 0.9], [0.4, 0.2], [0.35, 0.6], [0.8, 0.3], [0.5, 0.5], [0.2, 0.1]])
    positives = np.array([[0, 1], [0, 0], [1, 1], [1, 0], [0, 1], [1, 0]], dtype=bool)
    weights = m.cluster_weights(np.array([0, 0, 1, 2, 3, 4]), resamples=50, seed=2)
    macro, ci, per_class = m.macro_auc_with_interval(scores, positives, weights)
    assert macro == pytest.approx(m.macro_auc(scores, positives)[0]) and per_class == m.macro_auc(scores, positives)[1]
    assert ci == m.interval(m.macro_auc(scores, positives, weights, classes=[True, True])[0])
    assert ci[0] < macro < ci[1]
    assert m.macro_auc_with_interval(scores, positives, weights[:0])[1] is None  # no resamples: no interval
    undefined = m.macro_auc_with_interval(scores, np.ones_like(positives), weights)
    assert undefined[:2] == (None, None) and np.isnan(undefined[2]).all()


def test_interval_is_the_central_percentile_range():
    samples = np.arange(101, dtype=float)
    assert m.interval(samples) == pytest.approx([2.5, 97.5]) and m.interval(samples, level=0.9) == pytest.approx(
        [5, 95]
    )
    assert m.interval(np.array([3.0, np.nan, 1.0, 2.0]), level=0.5) == pytest.approx([1.5, 2.5])
    assert m.interval(np.array([])) is None and all(type(v) is float for v in m.interval(samples))


def test_defined_mean():
    assert m.defined_mean(np.array([1.0, np.nan, 0.0, 1.0])) == pytest.approx(2 / 3)
    assert m.defined_mean(np.array([np.nan])) is None and m.defined_mean(np.array([])) is None
    assert type(m.defined_mean([1, 0])) is float


def test_mean_with_interval_skips_resamples_without_defined_values():
    values = np.array([0.5, np.nan])
    assert m.mean_with_interval(values, np.array([[1.0, 1.0], [0.0, 2.0]])) == (0.5, [0.5, 0.5])
    assert m.mean_with_interval(values, np.array([[0.0, 2.0]])) == (0.5, None)


def test_cluster_weights_edge_cases():
    assert m.cluster_weights(np.array([5, 5, 5]), resamples=4, seed=0).tolist() == [[1, 1, 1]] * 4  # one case
    for clusters, resamples, shape in (([], 5, (5, 0)), ([], 0, (0, 0)), ([1, 2], 0, (0, 2)), ([1, 2], -1, (0, 2))):
        weights = m.cluster_weights(np.array(clusters), resamples=resamples, seed=0)
        assert weights.shape == shape and weights.dtype == np.float32
    weights = m.cluster_weights(np.array(["c", "a", "b"]), resamples=300, seed=1)
    assert weights.dtype == np.float32 and (weights > 0).any(axis=0).all()  # every case gets drawn sometimes


def test_majority_vote_ties_go_to_the_summed_similarity():
    assert m.majority_vote(["A", "A", "B", "B"], [0.1, 0.1, 0.3, 0.0]) == ["B", "A"]  # 0.3 > 0.2
    assert m.majority_vote(["A", "B"], [float("nan"), 0.1]) == ["B", "A"]  # no similarity counts as none

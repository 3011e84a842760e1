"""Fairness metrics against hand-worked confusion matrices and against fairlearn."""

import numpy as np
import pytest
from fairlearn.metrics import demographic_parity_difference, equal_opportunity_difference

from evaluation.fairness import attribute_fairness, classification_metrics, fairness_report
from evaluation.rates import rate_gaps
from evaluation.report import AttributeFairness

# Hand-worked case: 3 classes, groups A (code 0) and B (code 1), one sample missing (-1).
#   A: true 0 0 1 1 2 2 / pred 0 1 1 1 2 0 -> 4/6 correct
#   B: true 0 0 0 1 2 2 / pred 0 0 0 0 2 2 -> 5/6 correct
#   missing: true 1 / pred 0 (must be ignored)
Y_TRUE = np.array([0, 0, 1, 1, 2, 2, 0, 0, 0, 1, 2, 2, 1])
Y_PRED = np.array([0, 1, 1, 1, 2, 0, 0, 0, 0, 0, 2, 2, 0])
CODES = np.array([0] * 6 + [1] * 6 + [-1])


def test_classification_metrics_hand_worked():
    # confusion rows=true: a:[2,1,0,0] b:[1,1,0,0] c:[0,0,1,0] d: no sample
    m = classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 0, 2], ["a", "b", "c", "d"])
    assert m.n == 6
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.confusion == [[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    # recalls a=2/3, b=1/2, c=1/1; d absent -> omitted, not averaged as 0
    assert m.per_class_recall == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 1.0})
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)


def test_classification_metrics_matches_sklearn():
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    rng = np.random.default_rng(1)
    yt = rng.integers(0, 5, 300)
    yp = np.where(rng.random(300) < 0.5, yt, rng.integers(0, 5, 300))
    m = classification_metrics(yt, yp, list("abcde"))
    assert m.balanced_accuracy == pytest.approx(balanced_accuracy_score(yt, yp))
    assert m.confusion == confusion_matrix(yt, yp, labels=range(5)).tolist()


def test_classification_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 3], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="samples"):
        classification_metrics([0, 1], [0], ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        classification_metrics([], [], ["a"])


def test_attribute_fairness_hand_worked():
    f = attribute_fairness(Y_TRUE, Y_PRED, CODES, ["A", "B"], "sex", num_classes=3)
    assert f.n_missing == 1
    assert [(g.group, g.count) for g in f.groups] == [("A", 6), ("B", 6)]
    assert [g.accuracy for g in f.groups] == pytest.approx([4 / 6, 5 / 6])
    # bacc A: recalls 1/2, 2/2, 1/2 -> 2/3; B: 3/3, 0/1, 2/2 -> 2/3
    assert [g.balanced_accuracy for g in f.groups] == pytest.approx([2 / 3, 2 / 3])
    assert (f.worst_group, f.worst_group_accuracy) == ("A", pytest.approx(4 / 6))
    # overall (non-missing) = 9/12 = 0.75; mean(|0.667-0.75|, |0.833-0.75|) = 1/12
    assert f.unfairness == pytest.approx(1 / 12)
    assert f.max_gap == pytest.approx(1 / 6)
    # TPR A/B per class: c0 1/2 vs 3/3, c1 2/2 vs 0/1, c2 1/2 vs 2/2 -> gaps .5, 1, .5
    assert f.eopp1 == pytest.approx((0.5 + 1 + 0.5) / 3)
    # TNR A/B: c0 3/4 vs 2/3, c1 3/4 vs 5/5, c2 4/4 vs 4/4 -> gaps 1/12, 1/4, 0
    assert f.eopp0 == pytest.approx((1 / 12 + 1 / 4 + 0) / 3)
    # EODD per class (TPR gap + FPR gap)/2 = 7/24, 15/24, 6/24 -> mean 28/72
    assert f.eodd == pytest.approx(28 / 72)
    # fairlearn EOD per class max(TPR gap, FPR gap) = .5, 1, .5
    assert f.equalized_odds_difference == pytest.approx(2 / 3)
    # selection rates A/B: c0 2/6 vs 4/6, c1 3/6 vs 0/6, c2 1/6 vs 2/6
    assert f.demographic_parity_difference == pytest.approx((1 / 3 + 1 / 2 + 1 / 6) / 3)
    assert f.intervals is None
    # Class mix: recalls over both groups c0 4/5, c1 2/3, c2 3/4. A holds 2+2+2 of them,
    # B 3+1+2: expected accuracies 133/180 and 137/180; observed 120/180 and 150/180.
    assert [g.expected_accuracy for g in f.groups] == pytest.approx([133 / 180, 137 / 180])
    assert f.class_mix_gap == pytest.approx(4 / 180)
    assert f.within_class_gap == pytest.approx(26 / 180)
    assert AttributeFairness.model_validate_json(f.model_dump_json()) == f


def test_missing_samples_do_not_change_metrics():
    base = attribute_fairness(Y_TRUE[:12], Y_PRED[:12], CODES[:12], ["A", "B"], "sex", 3)
    rng = np.random.default_rng(0)
    yt = np.concatenate([Y_TRUE[:12], rng.integers(0, 3, 50)])
    yp = np.concatenate([Y_PRED[:12], rng.integers(0, 3, 50)])
    codes = np.concatenate([CODES[:12], -np.ones(50, dtype=int)])
    f = attribute_fairness(yt, yp, codes, ["A", "B"], "sex", 3)
    assert f.n_missing == 50 and base.n_missing == 0
    assert f.model_dump(exclude={"n_missing"}) == base.model_dump(exclude={"n_missing"})


def test_empty_group_omitted_and_all_missing():
    codes = np.where(CODES == 1, 2, CODES)  # group "mid" (code 1) has no sample
    f = attribute_fairness(Y_TRUE, Y_PRED, codes, ["A", "mid", "B"], "age", 3)
    assert [g.group for g in f.groups] == ["A", "B"]
    with pytest.raises(ValueError, match="no sample"):
        attribute_fairness(Y_TRUE, Y_PRED, -np.ones(13, dtype=int), ["A"], "age", 3)
    with pytest.raises(ValueError, match="group codes"):
        attribute_fairness(Y_TRUE, Y_PRED, CODES + 1, ["A", "B"], "age", 3)
    rep = fairness_report(
        Y_TRUE, Y_PRED, {"sex": (CODES, ["A", "B"]), "age": (-np.ones(13, int), ["x"])}, 3
    )
    assert list(rep) == ["sex"]
    assert rep["sex"] == attribute_fairness(Y_TRUE, Y_PRED, CODES, ["A", "B"], "sex", 3)


def test_one_class_set_for_every_rate_metric():
    # A: true 0 1 / pred 0 1; C: true 0 0 / pred 0 1. Class 0 has no negative in C, class
    # 1 no positive in C: no class has every rate defined in every group, so every rate
    # gap is undefined (None), including demographic parity, never a partial average.
    yt, yp, codes = np.array([0, 1, 0, 0]), np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1])
    f = attribute_fairness(yt, yp, codes, ["A", "C"], "sex", num_classes=2)
    assert [g.balanced_accuracy for g in f.groups] == pytest.approx([1.0, 0.5])
    assert f.rate_classes == []
    assert (f.eopp0, f.eopp1, f.eodd) == (None, None, None)
    assert f.demographic_parity_difference is None and f.equalized_odds_difference is None
    assert f.max_gap == pytest.approx(0.5)  # the accuracy gap is still defined


def test_absent_classes_do_not_dilute_rate_gaps():
    # Two of 8 classes present (as on real images): EOpp0 and demographic parity used to
    # average over all 8 (six zeros), EOpp1 over the 2 present: EOpp0 = EOpp1 / 4.
    rng = np.random.default_rng(2)
    yt = rng.integers(0, 2, 300)
    codes = rng.integers(0, 2, 300)
    yp = np.where(rng.random(300) < np.where(codes == 1, 0.5, 0.1), 1 - yt, yt)
    f = attribute_fairness(yt, yp, codes, ["f", "m"], "sex", num_classes=8)
    assert f.rate_classes == [0, 1]
    two = attribute_fairness(yt, yp, codes, ["f", "m"], "sex", num_classes=2)
    for key in ("eopp0", "eopp1", "eodd", "demographic_parity_difference",
                "equalized_odds_difference"):
        assert getattr(f, key) == pytest.approx(getattr(two, key)), key
    # One-vs-rest with two classes: TNR of class 0 is TPR of class 1, so the two agree.
    assert f.eopp0 == pytest.approx(f.eopp1)
    dpd = [demographic_parity_difference((yt == c).astype(int), (yp == c).astype(int),
                                         sensitive_features=codes) for c in (0, 1)]
    assert f.demographic_parity_difference == pytest.approx(np.mean(dpd))


def test_class_mix_separates_a_groups_classes_from_how_it_is_treated():
    # Class 0 is easy (recall 0.9), class 1 hard (0.5), in both groups alike; group
    # "old" holds mostly class 1. Its lower accuracy is all class mix.
    yt = np.array([0] * 90 + [1] * 10 + [0] * 10 + [1] * 90)
    codes = np.array([0] * 100 + [1] * 100)
    yp = yt.copy()
    for start, wrong in ((0, 9), (90, 5), (100, 1), (110, 45)):  # 9 of 90, 5 of 10, ...
        yp[start:start + wrong] = 1 - yt[start:start + wrong]
    f = attribute_fairness(yt, yp, codes, ["young", "old"], "age", 2)
    assert [g.accuracy for g in f.groups] == pytest.approx([0.86, 0.54])
    assert f.max_gap == pytest.approx(0.32)
    assert f.class_mix_gap == pytest.approx(0.32)
    assert f.within_class_gap == pytest.approx(0.0, abs=1e-12)
    # Same class mix in both groups, each group recalled differently: no class-mix gap.
    yt2 = np.tile([0, 1], 100)
    yp2 = np.where((codes == 1) & (np.arange(200) % 4 == 0), 1 - yt2, yt2)
    g = attribute_fairness(yt2, yp2, codes, ["young", "old"], "age", 2)
    assert g.class_mix_gap == pytest.approx(0.0, abs=1e-12)
    assert g.within_class_gap == pytest.approx(g.max_gap) and g.max_gap == pytest.approx(0.25)


def test_one_known_sample_does_not_crash():
    # fairlearn's MetricFrame raised "Feature array has too many dimensions" here.
    f = attribute_fairness([0, 1, 1, 0], [0, 1, 1, 0], [-1, -1, 1, -1], ["female", "male"],
                           "sex", 8, n_boot=20)
    assert [(g.group, g.count, g.accuracy) for g in f.groups] == [("male", 1, 1.0)]
    assert f.n_missing == 3 and f.intervals is None


def test_one_group_has_no_gaps():
    f = attribute_fairness([0, 1, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1], ["female", "male"],
                           "sex", 2)
    assert [g.group for g in f.groups] == ["male"] and f.worst_group == "male"
    for key in ("unfairness", "max_gap", "max_gap_interval", "eopp0", "eopp1", "eodd",
                "demographic_parity_difference", "equalized_odds_difference",
                "class_mix_gap", "within_class_gap"):
        assert getattr(f, key) is None, key
    assert f.groups[0].gap_interval is None


@pytest.mark.parametrize("codes", [[0, None, 1, 0], ["0", "1", "x", "0"], [0, 1.5, 1, 0],
                                   np.array([0, np.nan, 1, 0])])
def test_bad_group_codes_are_a_clear_value_error(codes):
    with pytest.raises(ValueError, match="group codes must be integers"):
        attribute_fairness([0, 1, 1, 0], [0, 1, 1, 0], codes, ["f", "m"], "sex", 2)
    assert attribute_fairness([0, 1], [0, 1], [0.0, 1.0], ["f", "m"], "sex", 2).max_gap == 0.0


def test_gap_intervals_are_wide_for_small_groups():
    # 400 samples in group a (80 % right), 4 in group b (all wrong): b lags, measurably.
    # 3 in group c with 2 right: its 1/3 lag is within noise, its interval includes 0.
    yt = np.zeros(407, dtype=int)
    yp = np.r_[np.where(np.arange(400) % 5 == 0, 1, 0), [1, 1, 1, 1], [0, 0, 1]]
    codes = np.r_[np.zeros(400, int), np.ones(4, int), np.full(3, 2)]
    f = attribute_fairness(yt, yp, codes, ["a", "b", "c"], "age", 2, seed=3)
    by = {g.group: g for g in f.groups}
    assert [by[g].count for g in "abc"] == [400, 4, 3]
    lo_b, hi_b = by["b"].gap_interval
    lo_c, hi_c = by["c"].gap_interval
    assert 0 < lo_b < 0.8 - 0 < hi_b  # the point gap is 0.8 - 0 with n=4
    assert lo_c < 0 < hi_c  # 0.8 - 2/3: not a measurable lag
    lo, hi = f.max_gap_interval
    assert lo < f.max_gap < hi and hi - lo > 0.2
    # seeded: the same numbers again
    assert attribute_fairness(yt, yp, codes, ["a", "b", "c"], "age", 2, seed=3) == f


def test_matches_fairlearn_on_random_data():
    rng = np.random.default_rng(3)
    n, k = 600, 4
    yt = rng.integers(0, k, n)
    codes = rng.integers(0, 3, n)
    # group 2 is worse: more random predictions
    noise = rng.random(n) < np.where(codes == 2, 0.6, 0.3)
    yp = np.where(noise, rng.integers(0, k, n), yt)
    f = attribute_fairness(yt, yp, codes, ["g0", "g1", "g2"], "age", k)
    eopp = [
        equal_opportunity_difference((yt == c).astype(int), (yp == c).astype(int),
                                     sensitive_features=codes)
        for c in range(k)
    ]  # fmt: skip
    dpd = [
        demographic_parity_difference((yt == c).astype(int), (yp == c).astype(int),
                                      sensitive_features=codes)
        for c in range(k)
    ]  # fmt: skip
    assert f.eopp1 == pytest.approx(np.mean(eopp))
    assert f.demographic_parity_difference == pytest.approx(np.mean(dpd))
    # the multiclass pitfall: fairlearn on raw labels only looks at label 1
    assert demographic_parity_difference(yt, yp, sensitive_features=codes) == pytest.approx(dpd[1])
    assert f.worst_group == "g2"
    accs = {g.group: g.accuracy for g in f.groups}
    assert f.max_gap == pytest.approx(max(accs.values()) - min(accs.values()))


def test_bootstrap_intervals_contain_point_estimates():
    rng = np.random.default_rng(5)
    n = 400
    yt = rng.integers(0, 3, n)
    codes = rng.integers(-1, 2, n)
    yp = np.where(rng.random(n) < np.where(codes == 1, 0.2, 0.5), rng.integers(0, 3, n), yt)
    f = attribute_fairness(yt, yp, codes, ["f", "m"], "sex", 3, n_boot=60, seed=1)
    iv = f.intervals
    assert iv is not None
    point = {
        "worst_group_accuracy": f.worst_group_accuracy,
        "max_gap": f.max_gap,
        **{f"accuracy[{g.group}]": g.accuracy for g in f.groups},
        **{f"balanced_accuracy[{g.group}]": g.balanced_accuracy for g in f.groups},
    }
    assert set(point) | {"accuracy"} == set(iv)
    for name, value in point.items():
        lo, hi = iv[name]
        assert lo <= value <= hi, name
        assert hi - lo > 0, name
    keep = codes >= 0
    lo, hi = iv["accuracy"]
    assert lo <= np.mean(yt[keep] == yp[keep]) <= hi
    again = attribute_fairness(yt, yp, codes, ["f", "m"], "sex", 3, n_boot=60, seed=1)
    assert again.intervals == iv  # seeded


def test_rate_summaries_equal_fairlearns_functions():
    from evaluation.bench_rates import fairlearn_summaries, main, sample

    for seed in range(3):
        yt, yp, names = sample(300, seed)
        gaps = rate_gaps(yt, yp, names, 8)
        dpd, eod = fairlearn_summaries(yt, yp, names, 8)
        assert gaps["demographic_parity_difference"] == pytest.approx(dpd, abs=1e-12)
        assert gaps["equalized_odds_difference"] == pytest.approx(eod, abs=1e-12)
    assert main(["--n", "200", "--repeat", "1"]) == 0

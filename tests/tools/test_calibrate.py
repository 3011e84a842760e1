"""tools.calibrate: the ladder of sources and the calibration bars (no training here)."""

from __future__ import annotations

from tasks.models import build_from_source
from tools.calibrate import BAL_ACC_RANGE, MIN_GROUP_GAP, calibration_checks, ladder
from tools.gate import static_check


def test_ladder_grows_from_tiny_to_wide_and_passes_the_gate() -> None:
    sources = ladder()
    assert list(sources) == ["tiny", "template", "wide"]
    params = []
    for name, source in sources.items():
        assert static_check(source).ok, (name, static_check(source).message)
        model = build_from_source(source, 8)
        params.append(sum(p.numel() for p in model.parameters()))
    assert params[0] < params[1] < params[2], params


def result(params: int, bal_acc: float, gap: float) -> dict:
    return {"params": params, "bal_acc": bal_acc, "gaps": {"sex": gap, "age": gap / 2}}


def test_calibration_checks_pass_and_fail_on_each_bar() -> None:
    mid = (BAL_ACC_RANGE[0] + BAL_ACC_RANGE[1]) / 2
    good = {"tiny": result(10, mid - 0.1, 0.0), "template": result(20, mid, MIN_GROUP_GAP)}
    checks = calibration_checks(good, min_gain=0.05)
    assert len(checks) == 3 and all(ok for _, ok in checks), checks
    too_easy = {**good, "template": result(20, BAL_ACC_RANGE[1] + 0.05, 0.1)}
    assert [ok for _, ok in calibration_checks(too_easy, 0.05)] == [False, True, True]
    fair = {**good, "template": result(20, mid, MIN_GROUP_GAP / 2)}
    assert [ok for _, ok in calibration_checks(fair, 0.05)] == [True, False, True]
    flat = {"tiny": result(10, mid, 0.1), "wide": result(30, mid + 0.01, 0.1)}
    checks = calibration_checks(flat, 0.05)
    assert len(checks) == 1 and not checks[0][1] and "wide beats tiny" in checks[0][0]


"""The run report: built from a real heuristic run, from a killed copy of it, and checked
in a real headless Chromium (console errors, images, lineage, screenshot).

The browser tests skip when Chromium is not installed, except in CI (``CI=true``), where
a missing browser is a failure: ``.ci/run`` installs Debian's ``chromium`` first.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil

import pytest

from graph.browser import check_page, find_chromium
from graph.report import (
    balanced_accuracy_interval,
    load_run,
    main,
    wilson,
)


def _need_chromium() -> None:
    if find_chromium() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Chromium is required in CI (apt-get install chromium; .ci/run does it)")
        pytest.skip("Chromium not installed (apt-get install chromium, or set FLNAS_CHROMIUM)")


@pytest.fixture(scope="module")
def killed_run(heuristic_run, tmp_path_factory):
    """A copy of the finished run as a kill -9 in round 2 leaves it: no summary, no test
    evaluation, no report, the trace cut after round 1 with a torn last line, and the
    round-2 candidate written but not evaluated."""
    src, _ = heuristic_run
    dst = tmp_path_factory.mktemp("killed") / "h1"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("cache", "checkpoints.sqlite*"))
    for name in ("summary.json", "report.html", "report.md", "best_model.py",
                 "best_model.onnx", "pareto.png", "group_accuracy.png"):
        (dst / name).unlink(missing_ok=True)
    for test_dir in dst.glob("candidates/*/test"):
        shutil.rmtree(test_dir)
    lines = (dst / "trace.jsonl").read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if '"round_end"' in line and '"round": 1' in line)
    (dst / "trace.jsonl").write_text("\n".join(lines[:cut + 3]) + '\n{"event": "node_st')
    rec = json.loads((dst / "candidates" / "c002" / "report.json").read_text())
    rec.update(status="gated", report=None)
    (dst / "candidates" / "c002" / "report.json").write_text(json.dumps(rec))
    return dst


def test_wilson_and_balanced_accuracy_intervals():
    lo, hi = wilson(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson(0.0, 10)[0] == 0.0 and wilson(0.0, 10)[1] > 0.2  # never a zero width
    assert wilson(0.3, 0) is None
    # Two classes of 100 with recalls 0.8 and 0.6: centred on 0.7; adjusted recalls 82/104
    # and 62/104 give sd sqrt(.7885*.2115/104 + .5962*.4038/104) / 2 = 0.0313.
    lo, hi = balanced_accuracy_interval([[80, 20], [40, 60]])
    assert (lo + hi) / 2 == pytest.approx(0.7) and hi - lo == pytest.approx(2 * 1.96 * 0.0313,
                                                                           abs=1e-3)
    lo, hi = balanced_accuracy_interval([[5, 0, 0], [5, 0, 0], [0, 0, 0]])  # all one class
    assert lo < 0.5 < hi  # recalls of exactly 0 and 1 on 5 samples are still uncertain
    assert balanced_accuracy_interval([]) is None


@pytest.mark.e2e
def test_report_is_written_at_the_end_of_a_run(heuristic_run):
    run_dir, _ = heuristic_run
    page = (run_dir / "report.html").read_text()
    md = (run_dir / "report.md").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    best = summary["best"]["id"]
    # Self-contained: every image inline, nothing fetched from anywhere. The two images are
    # the run's pareto.png and group_accuracy.png (one plotting path, one file each).
    inline = [base64.b64decode(b) for b in re.findall(r"src='data:image/png;base64,([^']+)'",
                                                       page)]
    assert inline == [(run_dir / "pareto.png").read_bytes(),
                      (run_dir / "group_accuracy.png").read_bytes()]
    assert not list(run_dir.glob("report_*.png"))
    assert "![Pareto front](pareto.png)" in md and "(group_accuracy.png)" in md
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    for section in ("Final design", "Pareto front", "Per-group accuracy", "Lineage",
                    "Failures and fixes", "Token and time ledger", "Rounds"):
        assert f">{section}" in page and f"## {section}" in md, section
    assert "Stopped: <b>iter_max</b>" in page and "Partial run" not in page
    cands = sorted(p.name for p in (run_dir / "candidates").iterdir())
    assert sorted(re.findall(r"data-lineage-node='([^']+)'", page)) == cands
    # The critique that led to each designer child, and the failure + diagnosis of a fix.
    assert "critique of c000: " in page and "critique of c000: " in md
    assert "diagnosis:</b> over budget: applied" in page
    assert "| c001 | budget |" in md and "c001-fix1" in md
    # Designs trained on more seeds (the Template in prepare, promoted and confirmed ones)
    # show the mean the search ranked them by.
    assert "mean over 2 training seeds: bal.acc" in md and "mean over 2 training" in page
    # The headline card gives the chosen design's mean over its confirmation seeds.
    assert best in summary["confirmation"]["finalists"]
    assert re.search(r"\d\.\d{3} \[-?\d+\.\d{3}, -?\d+\.\d{3}\] over 2 training seeds "
                     r"\(screen \d\.\d{3}\)", page)
    # The final design: its code, validation and test numbers with intervals.
    assert f"`{best}`" in md and "def build_model" in md
    row = next(line for line in md.splitlines() if line.startswith("| balanced accuracy |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1]) == pytest.approx(summary["best"]["val"]["balanced_accuracy"],
                                            abs=1e-3)
    assert float(cells[3]) == pytest.approx(summary["test"]["balanced_accuracy"], abs=1e-3)
    assert re.fullmatch(r"\[\d\.\d{3}, \d\.\d{3}\]", cells[2]) and cells[4].startswith("[")
    # How much of each attribute's gap the groups' class mix explains (validation report).
    record = json.loads((run_dir / "candidates" / best / "report.json").read_text())
    fairness = record["report"]["fairness"]
    for attr in ("sex", "age"):
        row = next(line for line in md.splitlines()
                   if line.startswith(f"| {attr}: max gap from class mix |"))
        assert float(row.split("|")[2]) == pytest.approx(fairness[attr]["class_mix_gap"],
                                                         abs=1e-3)
    assert "no LLM calls (heuristic brains)" in page
    evs = [json.loads(line) for line in (run_dir / "trace.jsonl").read_text().splitlines()]
    assert any(e["event"] == "report" for e in evs)
    # The front, the Template and the choice re-timed side by side in one sandboxed job.
    side = summary["latency_side_by_side"]
    front = {e["id"] for e in summary["pareto"]["front"]}
    assert set(side["latency_ms"]) == front | {"c000", best}
    assert all(0 < ms < 100 for ms in side["latency_ms"].values()) and not side["errors"]
    assert [e["tool"] for e in evs if e.get("tool") == "retime"] == ["retime"]
    row = next(line for line in md.splitlines() if line.startswith("| c000 (Template"))
    assert float(row.split("|")[5]) == pytest.approx(side["latency_ms"]["c000"], abs=1e-3)
    assert "latency ms side by side" in page and "in interleaved rounds" in md
    if best != "c000":
        assert f"Side by side, {best} runs in" in md


@pytest.mark.e2e
def test_report_of_a_killed_run_is_built_from_what_is_on_disk(killed_run, capsys):
    assert main([str(killed_run)]) == 0  # python -m graph.report RUN_DIR
    assert "wrote" in capsys.readouterr().out
    page = (killed_run / "report.html").read_text()
    md = (killed_run / "report.md").read_text()
    assert "Partial run" in page and "no end recorded" in page
    assert f"--resume h1 --run-dir {killed_run.parent}" in page
    assert "Status: **partial**" in md
    data = load_run(killed_run)
    assert data.status == "partial" and data.summary is None and data.test_report is None
    assert data.best_id in ("c000", "c001-fix1")  # the best evaluated so far
    assert "not tested" in page
    assert "not finished (gated)" in page  # c002 was in flight
    assert len(re.findall(r"data-lineage-node=", page)) == \
        len(list(killed_run.glob("candidates/*/report.json")))  # every record on disk
    # The report drew the run's two images again (the kill left none).
    for name in ("pareto.png", "group_accuracy.png"):
        assert (killed_run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_report_cli_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err


@pytest.mark.e2e
def test_report_page_in_headless_chromium(heuristic_run, killed_run, tmp_path):
    _need_chromium()
    run_dir, _ = heuristic_run
    shot = tmp_path / "report.png"
    res = check_page(run_dir / "report.html", screenshot=shot)
    assert res.ok, res.describe()
    n = len(list((run_dir / "candidates").iterdir()))
    assert res.images == 2 and res.lineage_nodes == n and not res.network
    assert res.title == "FL-NAS run h1"
    png = shot.read_bytes()
    assert png[:4] == b"\x89PNG"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width == 1280 and height > 2000  # the whole page, not just the first screen
    partial = check_page(killed_run / "report.html")
    assert partial.ok, partial.describe()


def test_browser_check_fails_a_broken_page(tmp_path):
    _need_chromium()
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><title>broken</title></head><body>"
                    "<p>text</p><img alt='gone' src='missing.png'>"
                    "<script>console.error('boom'); notAFunction();</script></body></html>")
    res = check_page(page)
    assert not res.ok
    problems = "\n".join(res.problems())
    assert "boom" in problems and "notAFunction" in problems
    assert "image did not load: gone" in problems and "the lineage is empty" in problems
    good = tmp_path / "good.html"
    png = base64.b64encode(bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360f8cf000001010100186dd6a70000000049454e44ae426082"))
    good.write_text(f"<html><head><title>ok</title></head><body><p>fine</p>"
                    f"<img src='data:image/png;base64,{png.decode()}'>"
                    "<ul><li data-lineage-node='c000'>c000</li></ul></body></html>")
    assert check_page(good).ok, check_page(good).describe()

"""The CLI's sandbox policy: LLM-written code never runs without the OS sandbox by default."""

from __future__ import annotations

import pytest

from agents.settings import Settings
from graph import run
from tools import sandbox


@pytest.fixture(autouse=True)
def _restore_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sandbox._POLICY, "require_isolation", False)


def test_isolation_required_by_backend() -> None:
    assert Settings(llm="openai:gpt-x").isolation_required
    assert not Settings(llm="heuristic").isolation_required
    assert not Settings(llm="openai:gpt-x", require_isolation=False).isolation_required
    assert Settings(llm="heuristic", require_isolation=True).isolation_required


def test_llm_run_refused_without_sandbox(monkeypatch: pytest.MonkeyPatch, tmp_path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sandbox, "isolation_problem", lambda: "bubblewrap is not installed")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rc = run.main(["--task", "isic", "--synthetic", "--llm", "openai:gpt-x",
                   "--run-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == run.EXIT_USAGE
    assert "bubblewrap is not installed" in err and "--no-require-isolation" in err
    assert not any(tmp_path.iterdir())  # nothing started


def test_heuristic_run_warns_and_sets_policy(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sandbox, "isolation_problem", lambda: "bubblewrap is not installed")
    run.check_isolation(Settings(llm="heuristic"))
    assert "without the OS sandbox" in capsys.readouterr().err
    assert sandbox.SandboxLimits().require_isolation is False
    with pytest.raises(run.ConfigError, match="bubblewrap is not installed"):
        run.check_isolation(Settings(llm="heuristic", require_isolation=True))
    monkeypatch.setattr(sandbox, "isolation_problem", lambda: None)
    run.check_isolation(Settings(llm="openai:x"))
    assert sandbox.SandboxLimits().require_isolation is True

"""Settings layers: defaults < config file < environment < flags; resume; per-role models."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.settings import LLM_BACKENDS, Settings
from graph import run
from graph.config import (
    ConfigError,
    Layer,
    configurable,
    env_layer,
    flag_layer,
    read_config,
    resolve,
    resume_overridable,
)
from graph.run import build_parser, settle


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No FLNAS_<SETTING> of the calling shell leaks in; no role loaded here leaks out."""
    from agents.registry import create_role, list_roles, unregister_role

    for name in configurable():
        monkeypatch.delenv(f"FLNAS_{name.upper()}", raising=False)
    # Another test may have unregistered the example role but left its module imported,
    # and an imported module does not register again: import it afresh here.
    sys.modules.pop("tests.agents.extra_role", None)
    before = set(list_roles())
    yield
    for name in set(list_roles()) - before:
        # An extension role would be wired into later tests' graphs; forgetting its module
        # lets a later load_roles register it again.
        sys.modules.pop(create_role(name).module, None)
        unregister_role(name)


def _settle(tmp_path: Path, *argv: str) -> Settings:
    ctx, resuming = settle(build_parser().parse_args([*argv, "--run-dir", str(tmp_path)]))
    assert not resuming
    return ctx


def test_four_layers_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('iter_max = 9\npatience = 7\nepochs = 2\n[budgets]\nmax_latency_ms = 2.5\n'
                   '[models]\ndesigner = "big"\ncritic = "small"\n')
    monkeypatch.setenv("FLNAS_PATIENCE", "6")
    monkeypatch.setenv("FLNAS_ITER_MAX", "8")
    monkeypatch.setenv("flnas_max_params", "none")  # names are case-insensitive
    ctx = _settle(tmp_path, "--config", str(cfg), "--iter-max", "4", "--synthetic")
    assert (ctx.iter_max, ctx.patience, ctx.epochs) == (4, 6, 2)  # flag, env, config
    assert ctx.max_latency_ms == 2.5 and ctx.max_params is None
    assert ctx.batch_size == Settings().batch_size  # default
    assert ctx.synthetic is True and ctx.models == {"designer": "big", "critic": "small"}
    assert ctx.role_model("critic") == "small" and ctx.role_model("code_fixer") is None
    assert flag_layer(build_parser().parse_args(["--iter-max", "4"])).values == \
        {"iter_max": "4"}  # flags not given are not a layer's values


def test_role_models_from_every_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLNAS_MODELS", "critic=env-critic,code_fixer=env-fixer")
    ctx = _settle(tmp_path, "--model", "shared", "--role-model", "designer=d1",
                  "--critic-model", "c1")
    assert ctx.models == {"designer": "d1", "critic": "c1"}  # the flag layer wins whole
    assert ctx.role_model("code_fixer") == "shared"
    monkeypatch.setenv("FLNAS_ROLES", "tests.agents.extra_role")
    ctx = _settle(tmp_path, "--role-model", "auditor=small", "--run-id", "r2")
    assert ctx.roles == ["tests.agents.extra_role"] and ctx.role_model("auditor") == "small"


def test_unknown_role_model_names_the_registered_roles(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[models]\nprofiler = "x"\n')
    with pytest.raises(ConfigError) as err:
        _settle(tmp_path, "--config", str(cfg))
    text = str(err.value)
    assert "unknown role 'profiler'" in text and f"config file {cfg}" in text
    assert "registered roles: " in text and "code_fixer, critic, designer" in text


BAD = {  # setting -> (TOML value, text for env and flag, what the message says)
    "max_latency_ms": ('"fast"', "fast", "valid number"),
    "llm": ("3", "3", None),
    "roles": ("3", "3", None),
    "max_params": ("-5", "-5", "greater than 0"),
    "llm_breaker_action": ('"x"', "x", "'heuristic' or 'stop'"),
}


@pytest.mark.parametrize("layer", ["config", "env", "flag"])
@pytest.mark.parametrize("key", sorted(BAD))
def test_bad_value_is_one_message_naming_key_and_layer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        key: str, layer: str) -> None:
    toml_value, text, needle = BAD[key]
    argv = ["--synthetic", "--run-dir", str(tmp_path / "runs")]
    if layer == "config":
        cfg = tmp_path / "c.toml"
        cfg.write_text(f"{key} = {toml_value}\n")
        argv += ["--config", str(cfg)]
        where = f"config file {cfg}"
    elif layer == "env":
        monkeypatch.setenv(f"FLNAS_{key.upper()}", text)
        where = f"environment variable FLNAS_{key.upper()}"
    else:
        argv += [f"--{key.replace('_', '-')}", text]
        where = f"flag --{key.replace('_', '-')}"
    assert run.main(argv) == run.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"error: bad setting {key} = ") and f"(from {where})" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if needle:
        assert needle in err
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_config_file_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("iter_maks = 3\n")
    with pytest.raises(ConfigError, match="unknown setting 'iter_maks'; known: .*iter_max"):
        read_config(cfg)
    cfg.write_text("[budgets]\nrun_dir = 'x'\n")  # set by --run-dir / --run-id only
    with pytest.raises(ConfigError, match=r"unknown setting \[budgets\] 'run_dir'"):
        read_config(cfg)
    cfg.write_text("iter_max = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_config(cfg)
    with pytest.raises(ConfigError, match="not found"):
        read_config(tmp_path / "missing.toml")
    cfg.write_text("iter_max = 'many'\n")
    with pytest.raises(ConfigError, match="bad setting iter_max = 'many'"):
        resolve(read_config(cfg))


def test_none_disables_a_budget_in_every_layer(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('max_params = "none"\n')
    monkeypatch.setenv("FLNAS_LLM_BREAKER_AFTER", "off")
    args = build_parser().parse_args(["--max-latency-ms", "3", "--max-memory-mb", "none"])
    ctx = resolve(Layer("config", {"max_memory_mb": 5}), read_config(cfg), env_layer(),
                  flag_layer(args))
    assert ctx.max_params is None and ctx.llm_breaker_after is None
    assert ctx.max_memory_mb is None and ctx.budgets.max_latency_ms == 3.0


def test_help_shows_every_setting_with_description_and_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "2000")  # no line wrapping inside a description
    text = " ".join(build_parser().format_help().split())
    for name in configurable():
        info = Settings.model_fields[name]
        assert f"--{name.replace('_', '-')}" in text
        assert " ".join((info.description or "").split()) in text, name
    assert "--eval-timeout" in text and "--llm-timeout" in text and "--role-model" in text
    assert "(default: 200000)" in text and "{heuristic,stop}" in text


def test_resume_overridable_is_field_metadata() -> None:
    assert resume_overridable() == {
        "iter_max", "patience", "quiet", "max_wall_s", "max_llm_tokens", "llm_timeout_s",
        "llm", "base_url", "model", "models", "target_balanced_accuracy", "target_max_gap",
        "require_isolation", "llm_breaker_after", "llm_breaker_action",
        # Where evaluations run changes no result already recorded.
        "executor", "workers", "ray_address", "cpus_per_eval", "gpus_per_eval", "eval_retries",
        # Results shared between runs are the same results (same key, machine, torch).
        "shared_cache"}


def test_resume_keeps_settings_but_takes_overridable_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    ctx = Settings(iter_max=3, epochs=5, run_dir=str(tmp_path / "r1"), run_id="r1")
    (tmp_path / "r1").mkdir()
    ctx.save(tmp_path / "r1" / "settings.json")
    monkeypatch.setenv("FLNAS_PATIENCE", "9")
    monkeypatch.setenv("FLNAS_EPOCHS", "5")  # the saved value: not a change
    args = build_parser().parse_args(["--resume", "r1", "--run-dir", str(tmp_path),
                                      "--iter-max", "6", "--epochs", "1",
                                      "--critic-model", "m"])
    restored, resuming = settle(args)
    assert resuming and (restored.iter_max, restored.patience, restored.epochs) == (6, 9, 5)
    assert restored.models == {"critic": "m"} and restored.run_id == "r1"
    err = capsys.readouterr().err
    assert "ignoring epochs (flag --epochs)" in err and "FLNAS_EPOCHS" not in err


def test_settings_json_of_the_old_dataclass_loads_on_resume(tmp_path: Path) -> None:
    """A run written before ``models``: per-role keys fold in, unknown keys are ignored."""
    old = {**{k: v for k, v in Settings().to_json().items() if k != "models"},
           "designer_model": "d", "critic_model": None, "fixer_model": "f",
           "eval_timeout_s": 900.0, "retired_setting": 1,
           "run_dir": str(tmp_path / "old"), "run_id": "old", "iter_max": 4}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "settings.json").write_text(json.dumps(old))
    ctx, resuming = settle(build_parser().parse_args(["--resume", "old", "--run-dir",
                                                      str(tmp_path)]))
    assert resuming and ctx.iter_max == 4 and ctx.run_id == "old"
    assert ctx.models == {"designer": "d", "code_fixer": "f"}
    assert ctx.eval_timeout_s is None  # that version never applied it


def test_damaged_settings_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    path = tmp_path / "r" / "settings.json"
    path.write_text(json.dumps({"iter_max": "many"}))
    with pytest.raises(ConfigError, match=f"bad setting iter_max = 'many' \\(from {path}\\)"):
        settle(build_parser().parse_args(["--resume", "r", "--run-dir", str(tmp_path)]))


def test_context_of_accepts_what_studio_passes(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from graph.services import ServicesFor

    monkeypatch.setenv("FLNAS_ITER_MAX", "7")  # only graph.config reads the environment
    ctx = Settings(run_dir=str(tmp_path / "run"), iter_max=3)
    assert Settings.of(ctx) is ctx
    assert Settings.of(ctx.to_json()) == ctx  # Studio hands nodes a plain dict
    assert Settings.of(None) == Settings() and Settings().iter_max == 10
    services = ServicesFor()
    svc = services(ctx.to_json())
    assert svc.ctx == ctx and (tmp_path / "run").is_dir()
    services.close()


def test_llm_backends_agree_with_parse_llm() -> None:
    from agents.llm import LLMConfigError, parse_llm

    for name in LLM_BACKENDS[1:]:
        assert parse_llm(f"{name}:m", base_url="http://127.0.0.1:9/v1").model == "m"
    with pytest.raises(LLMConfigError, match="unknown backend"):
        parse_llm("bogus:m")
    with pytest.raises(ValueError, match="unknown backend 'bogus'"):
        Settings(llm="bogus:m")


def test_studio_context_schema_describes_every_setting() -> None:
    from graph.builder import build_graph

    props = build_graph().get_context_jsonschema()["properties"]
    assert all(props[name].get("description") for name in Settings.model_fields)
    assert props["max_params"]["default"] == 200_000


def test_a_shared_cache_that_is_a_file_is_one_message(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "notes.txt"
    taken.write_text("not a folder")
    assert run.main(["--synthetic", "--run-dir", str(tmp_path / "runs"),
                     "--shared-cache", str(taken)]) == run.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: bad setting shared_cache = ") and "give a folder" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()

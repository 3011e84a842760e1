"""Settings layers: Settings defaults < config file < explicit flags; resume restores."""

from __future__ import annotations

import pytest

from agents.settings import Settings
from graph.config import ConfigError, read_config, resolve
from graph.run import _explicit, build_parser, settle


def test_flags_override_config_override_defaults(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('iter_max = 9\npatience = 7\n[budgets]\nmax_latency_ms = 2.5\n'
                   '[models]\ndesigner = "big"\ncritic = "small"\n')
    args = build_parser().parse_args(["--config", str(cfg), "--iter-max", "4", "--synthetic"])
    explicit = _explicit(args)
    assert explicit == {"iter_max": 4, "synthetic": True}  # defaults are not "given"
    ctx = resolve(Settings().to_json(), read_config(cfg), explicit)
    assert (ctx.iter_max, ctx.patience, ctx.max_latency_ms) == (4, 7, 2.5)
    assert ctx.designer_model == "big" and ctx.role_model("critic") == "small"
    assert ctx.epochs == Settings().epochs


def test_bad_config_is_a_clear_error(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[models]\nplanner = 'x'\n")
    with pytest.raises(ConfigError, match="planner"):
        read_config(cfg)
    cfg.write_text("iter_max = 'many'\n")
    with pytest.raises(ConfigError, match="iter_max"):
        resolve(Settings().to_json(), read_config(cfg), {})
    cfg.write_text("iter_max = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_config(cfg)


def test_resume_restores_settings_and_allows_only_safe_overrides(tmp_path):
    ctx = Settings(iter_max=3, epochs=5, run_dir=str(tmp_path / "r1"), run_id="r1")
    (tmp_path / "r1").mkdir()
    ctx.save(tmp_path / "r1" / "settings.json")
    args = build_parser().parse_args(["--resume", "r1", "--run-dir", str(tmp_path),
                                      "--iter-max", "6", "--epochs", "1"])
    restored, resuming = settle(args)
    assert resuming and restored.iter_max == 6 and restored.epochs == 5


def test_budget_none_disables(tmp_path):
    args = build_parser().parse_args(["--max-params", "none", "--max-latency-ms", "3"])
    ctx = resolve(Settings().to_json(), {}, _explicit(args))
    assert ctx.max_params is None and ctx.budgets.max_latency_ms == 3.0


def test_context_of_accepts_what_studio_passes(tmp_path):
    from graph.services import ServicesFor

    ctx = Settings(run_dir=str(tmp_path / "run"), iter_max=3)
    assert Settings.of(ctx) is ctx
    assert Settings.of(ctx.to_json()) == ctx  # Studio hands nodes a plain dict
    assert Settings.of(None) == Settings()
    services = ServicesFor()
    svc = services(ctx.to_json())
    assert svc.ctx == ctx and (tmp_path / "run").is_dir()
    services.close()

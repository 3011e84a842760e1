"""Settings resolution for the CLI: defaults < TOML config < environment < flags.

Every flag, config key and environment variable comes from a field of
:class:`agents.settings.Settings` (docs/architecture.md, "Settings"). Each layer is validated
on its own, so a bad value is reported once, with its key and the layer it came from:
``config file c.toml``, ``environment variable FLNAS_MAX_PARAMS``, ``flag --max-params``.

A config file holds field names at top level or in tables (flattened)::

    iter_max = 8
    [budgets]
    max_params = 150000
    max_latency_ms = 2.0
    max_flops = "none"      # TOML has no null
    [llm]
    llm = "openai:gpt-4.1"
    [models]                # per-role models, any registered role
    designer = "gpt-4.1"
    critic = "gpt-4.1-mini"
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource

from agents.settings import Settings
from tasks.data_args import add_flags, flag_name, flag_of

#: ``--help`` group titles by ``Flag.group`` key, in display order.
GROUPS = {"data": "data", "search": "search",
          "budgets": "device budgets (priority order; 'none' disables)",
          "recipe": "training recipe",
          "execution": "evaluation executor (scale-out, docs/scale-out.md)",
          "llm": "LLM backend", "run": "run"}
#: Plain aliases of ``--models ROLE=MODEL`` for the core roles.
ROLE_MODEL_ALIASES = {"designer": "--designer-model", "critic": "--critic-model",
                      "code_fixer": "--fixer-model"}
#: Parser destinations that steer the CLI itself rather than set a Settings field.
RUN_CONTROL = ("config", "runs_root", "run_id", "resume", "recover")


class ConfigError(ValueError):
    """A bad config file or setting (the message names the key and its layer)."""


def configurable() -> set[str]:
    """Names of the fields a config file, the environment or a flag may set."""
    return {n for n, info in Settings.model_fields.items()
            if (f := flag_of(info)) is not None and f.cli}


def resume_overridable() -> set[str]:
    """Names of the fields a resumed run may change (``Flag.resume``)."""
    return {n for n, info in Settings.model_fields.items()
            if (f := flag_of(info)) is not None and f.resume}


@dataclass(frozen=True)
class Layer:
    """The raw values one source gives (see :func:`resolve`)."""

    kind: Literal["saved", "config", "env", "flags"]
    values: dict[str, Any]
    path: str = ""
    """The file of a ``saved`` or ``config`` layer."""

    def where(self, key: str) -> str:
        """Name the source of ``key`` in this layer, for messages."""
        if self.kind == "env":
            return f"environment variable {Settings.model_config['env_prefix']}{key.upper()}"
        if self.kind == "flags":
            return f"flag {flag_name(key)}"
        return f"config file {self.path}" if self.kind == "config" else self.path


def build_parser(description: str = "") -> argparse.ArgumentParser:
    """Build the CLI parser: one flag per Settings field, plus the run-control flags.

    Every default is suppressed, so the flags given can be told apart from the rest.
    """
    p = argparse.ArgumentParser(prog="python -m graph.run", description=description,
                                argument_default=argparse.SUPPRESS)
    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    add_flags(p, Settings, GROUPS, given_only=True, groups=groups)
    for role, name in ROLE_MODEL_ALIASES.items():
        groups["llm"].add_argument(name, dest="models", action="append", metavar="MODEL",
                                   type=_role_model(role), help=f"same as --models {role}=MODEL")
    o = groups["run"]
    o.add_argument("--config", type=Path, help="TOML file of settings (environment "
                   "variables FLNAS_<SETTING> and flags override it)")
    o.add_argument("--run-dir", dest="runs_root", type=Path, help="runs folder (default: runs)")
    o.add_argument("--run-id", dest="run_id", help="name of a new run (default: timestamp)")
    o.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run")
    o.add_argument("--recover", action="store_true",
                   help="with --resume, when checkpoints.sqlite is missing or damaged: keep it "
                        "aside and search again from the beginning in the same folder, reusing "
                        "the cached evaluations")
    return p


def _role_model(role: str) -> Callable[[str], str]:
    """Make the argparse type of a ``--<role>-model`` alias: ``MODEL`` -> ``ROLE=MODEL``."""

    def convert(model: str) -> str:
        return f"{role}={model}"

    return convert


def flag_layer(args: argparse.Namespace) -> Layer:
    """Return the settings the command line gave (not the run-control flags)."""
    return Layer("flags", {k: v for k, v in vars(args).items() if k not in RUN_CONTROL})


def env_layer() -> Layer:
    """Return the settings given as ``FLNAS_<NAME>`` environment variables (case-insensitive)."""
    found = EnvSettingsSource(Settings)()
    return Layer("env", {k: v for k, v in found.items() if k in configurable()})


def read_config(path: Path) -> Layer:
    """Read a TOML config file into flat Settings field values.

    Raises:
        ConfigError: Unreadable TOML or an unknown key.
    """
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    names = configurable()
    out: dict[str, Any] = {}

    def put(key: str, value: Any, where: str) -> None:
        key = key.replace("-", "_")
        if key not in names:
            raise ConfigError(f"config file {path}: unknown setting {where}{key!r}; known: "
                              f"{', '.join(sorted(names))}")
        out[key] = value

    for key, value in raw.items():
        if key != "models" and isinstance(value, dict):
            for k, v in value.items():
                put(k, v, f"[{key}] ")
        else:
            put(key, value, "")
    return Layer("config", out, str(path))


def layers_of(args: argparse.Namespace) -> list[Layer]:
    """Return the config file (``--config``), environment and flag layers, lowest first."""
    config = getattr(args, "config", None)
    return [*([read_config(config)] if config else []), env_layer(), flag_layer(args)]


def _message(exc: ValidationError, layer: Layer) -> str:
    """One line per bad value: key, value, layer and what is wrong."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "settings"
        reason = str(err["msg"]).removeprefix("Value error, ")
        where = layer.where(str(err["loc"][0])) if err["loc"] else layer.where(key)
        lines.append(f"bad setting {key} = {err['input']!r} (from {where}): {reason}")
    return "\n".join(lines)


def validated(layer: Layer) -> dict[str, Any]:
    """Validate one layer on its own; return its values as the field types hold them.

    Raises:
        ConfigError: Naming each bad key, its value and the layer.
    """
    try:
        checked = Settings.model_validate(layer.values)
    except ValidationError as exc:
        raise ConfigError(_message(exc, layer)) from None
    return {k: getattr(checked, k) for k in layer.values if k in Settings.model_fields}


def resolve(*layers: Layer) -> Settings:
    """Merge the layers over the defaults (later layers win), each validated first.

    Raises:
        ConfigError: A bad value in any layer (the first such layer is reported).
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update(validated(layer))
    return Settings.model_validate(merged)


def load_saved(path: Path) -> Layer:
    """Read a run's ``settings.json`` as the lowest layer of a resumed run.

    Raises:
        ConfigError: The file cannot be read or holds a bad value.
    """
    try:
        saved = Settings.load(path)
    except (OSError, ValueError) as exc:  # ValidationError and JSONDecodeError included
        text = _message(exc, Layer("saved", {}, str(path))) \
            if isinstance(exc, ValidationError) else str(exc)
        raise ConfigError(f"cannot read {path}: {text}") from None
    return Layer("saved", saved.to_json(), str(path))


def resume(saved: Layer, layers: Iterable[Layer]) -> tuple[Settings, list[str]]:
    """Return a resumed run's settings: ``saved`` with only the resume-overridable changes.

    Returns:
        The settings and the ignored changes, as ``key (source)``; a layer that repeats
        the saved value is not a change.

    Raises:
        ConfigError: A bad value in any layer.
    """
    base = validated(saved)
    allowed = resume_overridable()
    changes: dict[str, Any] = {}
    ignored: list[str] = []
    for layer in layers:
        for key, value in validated(layer).items():
            if key in allowed:
                changes[key] = value
            elif value != base.get(key):
                ignored.append(f"{key} ({layer.where(key)})")
    return Settings.model_validate({**base, **changes}), ignored


def origin(key: str, layers: Iterable[Layer]) -> str:
    """Name the layer that set ``key`` last (``default`` when none did)."""
    found = "default"
    for layer in layers:
        if key in layer.values:
            found = layer.where(key)
    return found


def check_roles(ctx: Settings, layers: Iterable[Layer]) -> list[str]:
    """Load the run's role modules, then check that ``models`` names registered roles.

    Returns:
        The registered role names.

    Raises:
        ConfigError: A role module cannot be imported, or ``models`` names a role that no
            loaded module registered (the message lists the registered ones).
    """
    from agents.registry import load_roles

    try:
        registered = load_roles(ctx.roles)
    except ImportError as exc:
        raise ConfigError(f"bad setting roles (from {origin('roles', layers)}): {exc}") from None
    unknown = sorted(set(ctx.models) - set(registered))
    if unknown:
        raise ConfigError(f"bad setting models (from {origin('models', layers)}): unknown "
                          f"role {', '.join(map(repr, unknown))}; registered roles: "
                          f"{', '.join(registered)} (load more with --roles MODULE)")
    return registered

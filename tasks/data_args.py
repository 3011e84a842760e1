"""The dataset options, and command-line flags generated from pydantic fields.

:class:`DataOptions` is the one definition of the dataset settings (type, default,
description); the run settings (``agents.settings.Settings``) inherit them, and
:func:`add_data_args` turns them into the ``data`` flags of the command-line tools.
:func:`add_flags` is the generator both use: a field carrying :class:`Flag` metadata
becomes ``--field-name`` (see docs/architecture.md, "Settings").
"""

from __future__ import annotations

import argparse
import os
import shutil
import types
import typing
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter, field_validator
from pydantic.fields import FieldInfo

from tasks.cache import PreparedData, default_cache_root, prepare_isic
from tasks.isic import DatasetError, locate_layout
from tasks.isic_format import DOWNLOAD_HINT, GROUND_TRUTH_CSV

DATA_DIR_ENV = "FLNAS_ISIC_DIR"
TASKS = ("isic",)


@dataclass(frozen=True)
class Flag:
    """Command-line metadata of a settings field, read by :func:`add_flags`.

    Attributes:
        group: Key of the argparse group the flag is listed in.
        aliases: Further flag names (the first name is always ``--field-name``).
        resume: The setting may change when a run is resumed (it does not alter what
            was already evaluated).
        cli: False for fields the command line sets another way (no flag, no config key).
        metavar: Placeholder shown in ``--help``.
    """

    group: str
    aliases: tuple[str, ...] = ()
    resume: bool = False
    cli: bool = True
    metavar: str | None = None


def flag_of(info: FieldInfo) -> Flag | None:
    """Return the :class:`Flag` metadata of a model field (None: the field has no flag)."""
    return next((m for m in info.metadata if isinstance(m, Flag)), None)


def flag_name(field: str) -> str:
    """``max_latency_ms`` -> ``--max-latency-ms``."""
    return "--" + field.replace("_", "-")


def _choices(annotation: Any) -> tuple[Any, ...]:
    """Return the values of a ``Literal`` annotation (also inside ``X | None``), else ()."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return ()


def _is_collection(annotation: Any) -> bool:
    """Whether the field holds a list or a dict (its flag is repeatable)."""
    return typing.get_origin(annotation) in (list, dict)


def _allows_none(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType) and \
        type(None) in typing.get_args(annotation)


def _converter(info: FieldInfo, name: str) -> Any:
    """Make the argparse type of a field: the field's own pydantic validation of the text."""
    adapter: TypeAdapter[Any] = TypeAdapter(info.annotation or str)

    def convert(text: str) -> Any:
        if _allows_none(info.annotation) and text.lower() in ("none", "off", ""):
            return None
        return adapter.validate_python(text)

    convert.__name__ = name  # argparse names it in "invalid <name> value"
    return convert


def _argument(name: str, info: FieldInfo, flag: Flag, given_only: bool) -> dict[str, Any]:
    """Return the ``add_argument`` keywords of one field (see :func:`add_flags`)."""
    default = info.get_default(call_default_factory=True)
    shown = {None: "none", False: "off", True: "on"}.get(default, default) \
        if isinstance(default, bool | None) else default
    text = (info.description or "").replace("%", "%%")
    kw: dict[str, Any] = {"dest": name, "help": f"{text} (default: {shown})",
                          "default": argparse.SUPPRESS if given_only else default}
    if info.annotation is bool and default is False:
        kw["action"] = "store_true"
    elif info.annotation in (bool, bool | None):
        kw["action"] = argparse.BooleanOptionalAction
    elif _is_collection(info.annotation):
        kw.update(action="append", metavar=flag.metavar, help=f"{text} (repeatable)")
    else:
        choices = _choices(info.annotation)
        metavar = flag.metavar or ("{" + ",".join(map(str, choices)) + "}" if choices else None)
        number = {int: "N", float: "X"}
        metavar = metavar or next((v for t, v in number.items()
                                   if t in (info.annotation, *typing.get_args(info.annotation))),
                                  None)
        kw.update(metavar=metavar, type=str if given_only else _converter(info, name))
    return kw


def add_flags(parser: argparse.ArgumentParser, model: type[BaseModel],
              titles: dict[str, str], *, given_only: bool,
              groups: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """Add one flag per field of ``model`` that carries :class:`Flag` metadata.

    The flag is ``--field-name`` (plus the field's aliases); its help is the field's
    description and default; groups are made in the order fields first name them.

    Args:
        parser: The parser to extend (returned for chaining).
        model: The pydantic model whose fields define the flags.
        titles: Group title by :attr:`Flag.group` key (the key itself when missing).
        given_only: True: a flag not given leaves no attribute, and values stay text for
            the model to validate (so an error can name the flag). False: defaults come
            from the model and argparse validates each value with the field's type.
        groups: Argument groups by key, reused and filled in (so a caller can add its
            own flags to a group).
    """
    groups = {} if groups is None else groups
    for name, info in model.model_fields.items():
        flag = flag_of(info)
        if flag is None or not flag.cli:
            continue
        if flag.group not in groups:
            groups[flag.group] = parser.add_argument_group(titles.get(flag.group, flag.group))
        groups[flag.group].add_argument(flag_name(name), *flag.aliases,
                                        **_argument(name, info, flag, given_only))
    return parser


class DataOptions(BaseModel):
    """Which dataset to use and how to prepare it (the ``data`` flags)."""

    task: Annotated[str, Flag("data")] = Field(
        default="isic", description=f"dataset/task, one of: {', '.join(TASKS)}")
    data_dir: Annotated[str | None, Flag("data")] = Field(
        default=None, description=f"ISIC 2019 folder with {GROUND_TRUTH_CSV}, the metadata CSV and "
        f"ISIC_2019_Training_Input/ (none: ${DATA_DIR_ENV}); unused with --synthetic")
    synthetic: Annotated[bool, Flag("data")] = Field(
        default=False, description="use generated ISIC-format data instead of the real set")
    synthetic_n: Annotated[int, Flag("data")] = Field(
        default=4000, ge=8, description="number of synthetic images (the calibrated size of "
        "tasks.synthetic)")
    image_size: Annotated[int, Flag("data")] = Field(
        default=32, ge=8, description="side of the square training images in pixels (32 suits "
        "the synthetic default on a CPU: docs/metrics.md#noise; use 128 or more for real "
        "ISIC 2019)")
    seed: Annotated[int, Flag("data")] = Field(
        default=0, ge=0, description="seed of the data and split (default of the other seeds)")
    cache_dir: Annotated[str | None, Flag("data")] = Field(
        default=None,
        description="decoded-image cache root (none: $FLNAS_CACHE_DIR or ~/.cache/flnas)")
    strict: Annotated[bool, Flag("data")] = Field(
        default=False, description="fail on a missing or unreadable image instead of skipping it")

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        if value not in TASKS:
            raise ValueError(f"unknown task {value!r}; known: {', '.join(TASKS)}")
        return value


def add_data_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the dataset options of :class:`DataOptions` to ``parser`` (returned for chaining).

    Options: ``--task`` (isic), ``--data-dir`` (default env ``FLNAS_ISIC_DIR``),
    ``--synthetic``, ``--synthetic-n`` (4000), ``--image-size`` (64), ``--seed`` (0),
    ``--cache-dir`` (default env ``FLNAS_CACHE_DIR`` or ``~/.cache/flnas``), ``--strict``.
    """
    return add_flags(parser, DataOptions, {"data": "data"}, given_only=False)


def _synthetic_dir(root: Path, n: int, size: int, seed: int, progress: bool) -> Path:
    """Generate synthetic data once under ``root/synthetic`` and return its folder."""
    out = root / "synthetic" / f"n{n}_s{size}_seed{seed}"
    try:
        locate_layout(out)
        return out
    except DatasetError:
        pass
    from tasks.synthetic import generate  # lazy: only synthetic runs need it

    out.parent.mkdir(parents=True, exist_ok=True)
    # Generate beside the target and rename, so a killed run leaves no half dataset.
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        generate(tmp, n=n, size=size, seed=seed, progress=progress)
        try:
            os.rename(tmp, out)
        except OSError:
            try:
                # Another process generated the same set first (same n, size and seed:
                # the same files) and may be reading it now: keep its copy.
                locate_layout(out)
            except DatasetError:  # a broken folder from an older version: replace it
                shutil.rmtree(out)
                os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def prepare_from_args(args: argparse.Namespace | DataOptions, *,
                      progress: bool = True) -> PreparedData:
    """Prepare the dataset chosen by the options of `add_data_args`.

    Args:
        args: Parsed arguments, or any :class:`DataOptions` (the run settings are one).
        progress: Show progress bars.

    Returns:
        The prepared (decoded, cached, split) data.

    Raises:
        DatasetError: No data folder given or found, or bad data; the message says where
            to download ISIC 2019 and mentions ``--synthetic``.
    """
    if args.task not in TASKS:
        raise DatasetError(f"unknown task {args.task!r}; known: {', '.join(TASKS)}")
    root = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_root()
    data_dir: Path | None
    if args.synthetic:
        if args.synthetic_n < 8:
            raise ValueError(f"--synthetic-n must be at least 8, got {args.synthetic_n}")
        data_dir = _synthetic_dir(root, args.synthetic_n, args.image_size, args.seed, progress)
    else:
        env = os.environ.get(DATA_DIR_ENV)
        data_dir = Path(args.data_dir) if args.data_dir else (Path(env) if env else None)
        if data_dir is None:
            raise DatasetError(f"no ISIC 2019 data folder given. {DOWNLOAD_HINT}")
    return prepare_isic(
        data_dir, image_size=args.image_size, seed=args.seed, cache_root=root,
        strict=args.strict, progress=progress,
    )

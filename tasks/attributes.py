"""Sensitive attributes of ISIC samples: sex, age group and their intersection.

Codes are small ints with -1 meaning missing; samples with a missing attribute stay in
the data (they count for accuracy) and are left out only of that attribute's groups.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from tasks.isic_format import DEFAULT_AGE_BINS, SEX_NAMES


def encode_sex(values: Iterable[str | None]) -> np.ndarray:
    """Encode sex strings as int8 codes: 0 female, 1 male, -1 missing.

    Args:
        values: ``"female"``/``"male"`` (any case) or None/NaN/empty for missing.

    Returns:
        int8 array of codes.

    Raises:
        ValueError: A value that is neither female, male nor missing.
    """
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == "":
            out.append(-1)
            continue
        s = str(v).strip().lower()
        if s not in SEX_NAMES:
            raise ValueError(f"unknown sex value {v!r}")
        out.append(SEX_NAMES.index(s))
    return np.asarray(out, dtype=np.int8)


def _check_bins(age_bins: Sequence[float]) -> tuple[float, ...]:
    bins = tuple(float(b) for b in age_bins)
    if not bins:
        raise ValueError("age_bins needs at least one edge")
    increasing = all(a < b for a, b in zip(bins, bins[1:], strict=False))
    if not increasing or not all(np.isfinite(b) for b in bins):
        raise ValueError(f"age_bins must be finite and strictly increasing, got {age_bins!r}")
    return bins


def _fmt(x: float) -> str:
    return f"{x:g}"


def age_group_names(age_bins: Sequence[float] = DEFAULT_AGE_BINS) -> list[str]:
    """Names of the age groups for bin edges ``age_bins``.

    Edges ``(b0, ..., bk)`` give k+1 half-open groups ``[-inf, b0), [b0, b1), ...,
    [bk, inf)``, named ``"<b0"``, ``"b0-(b1-1)"`` for integer edges (ages are whole years),
    ``"b0-<b1"`` otherwise, and ``">=bk"``. The defaults give ``["<40", "40-59", ">=60"]``.

    Args:
        age_bins: Strictly increasing edges.

    Returns:
        Group names, one per code.
    """
    bins = _check_bins(age_bins)
    names = [f"<{_fmt(bins[0])}"]
    for lo, hi in zip(bins, bins[1:], strict=False):
        if lo.is_integer() and hi.is_integer():
            names.append(f"{_fmt(lo)}-{_fmt(hi - 1)}")
        else:
            names.append(f"{_fmt(lo)}-<{_fmt(hi)}")
    names.append(f">={_fmt(bins[-1])}")
    return names


def age_groups(age: np.ndarray, age_bins: Sequence[float] = DEFAULT_AGE_BINS) -> np.ndarray:
    """Bin ages into group codes (see `age_group_names`); NaN age gives -1.

    Args:
        age: Ages in years, NaN for missing.
        age_bins: Strictly increasing edges.

    Returns:
        int64 codes in ``0..len(age_bins)`` or -1.
    """
    bins = _check_bins(age_bins)
    age = np.asarray(age, dtype=np.float64)
    # right=False: an age equal to an edge opens the next group (40 -> "40-59").
    codes = np.digitize(age, bins, right=False).astype(np.int64)
    codes[np.isnan(age)] = -1
    return codes


def sensitive_groups(
    sex: np.ndarray,
    age: np.ndarray,
    age_bins: Sequence[float] = DEFAULT_AGE_BINS,
) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Group codes and names for each sensitive attribute.

    The intersection code is ``sex * n_age_groups + age_group`` when both are known and -1
    otherwise, so its names are ``"female|<40", "female|40-59", ..., "male|>=60"``.

    Args:
        sex: int8 codes, 0 female, 1 male, -1 missing.
        age: float ages, NaN missing.
        age_bins: Age bin edges.

    Returns:
        ``{"sex": (codes, names), "age": (codes, names), "sex_x_age": (codes, names)}``
        with int64 code arrays aligned with the inputs.

    Raises:
        ValueError: Shapes differ or a sex code is outside {-1, 0, 1}.
    """
    sex_codes = np.asarray(sex).astype(np.int64)
    age = np.asarray(age, dtype=np.float64)
    if sex_codes.shape != age.shape:
        raise ValueError(f"sex {sex_codes.shape} and age {age.shape} must have the same shape")
    if not np.isin(sex_codes, (-1, 0, 1)).all():
        raise ValueError("sex codes must be -1 (missing), 0 (female) or 1 (male)")
    age_names = age_group_names(age_bins)
    age_codes = age_groups(age, age_bins)
    known = (sex_codes >= 0) & (age_codes >= 0)
    inter = np.where(known, sex_codes * len(age_names) + age_codes, -1)
    inter_names = [f"{s}|{a}" for s in SEX_NAMES for a in age_names]
    return {
        "sex": (sex_codes, list(SEX_NAMES)),
        "age": (age_codes, age_names),
        "sex_x_age": (inter.astype(np.int64), inter_names),
    }

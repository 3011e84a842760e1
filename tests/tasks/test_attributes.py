import numpy as np
import pytest

from tasks.attributes import age_group_names, age_groups, encode_sex, sensitive_groups
from tasks.isic_format import DEFAULT_AGE_BINS


def test_default_age_bins_and_edges():
    assert DEFAULT_AGE_BINS == (40, 60)
    assert age_group_names() == ["<40", "40-59", ">=60"]
    ages = np.array([0, 35, 39, 40, 55, 59, 60, 85, np.nan], dtype=np.float32)
    assert age_groups(ages).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, -1]


def test_custom_bins():
    bins = (20, 40, 60, 80)
    assert age_group_names(bins) == ["<20", "20-39", "40-59", "60-79", ">=80"]
    assert age_groups(np.array([15, 20, 79, 80, np.nan]), bins).tolist() == [0, 1, 3, 4, -1]
    assert age_group_names((50,)) == ["<50", ">=50"]
    assert age_group_names((40.5, 60)) == ["<40.5", "40.5-<60", ">=60"]


@pytest.mark.parametrize("bins", [(), (60, 40), (40, 40), (40, float("nan"))])
def test_invalid_bins_rejected(bins):
    with pytest.raises(ValueError):
        age_group_names(bins)


def test_encode_sex():
    codes = encode_sex(["female", "MALE", None, "", float("nan"), " male "])
    assert codes.dtype == np.int8 and codes.tolist() == [0, 1, -1, -1, -1, 1]
    with pytest.raises(ValueError, match="other"):
        encode_sex(["other"])


def test_sensitive_groups_with_missing():
    sex = np.array([0, 1, -1, 0, 1, 1], dtype=np.int8)
    age = np.array([30, 45, 70, np.nan, 60, 39], dtype=np.float32)
    g = sensitive_groups(sex, age)
    assert set(g) == {"sex", "age", "sex_x_age"}
    codes, names = g["sex"]
    assert names == ["female", "male"] and codes.tolist() == [0, 1, -1, 0, 1, 1]
    codes, names = g["age"]
    assert names == ["<40", "40-59", ">=60"] and codes.tolist() == [0, 1, 2, -1, 2, 0]
    codes, names = g["sex_x_age"]
    assert names == ["female|<40", "female|40-59", "female|>=60",
                     "male|<40", "male|40-59", "male|>=60"]
    assert codes.tolist() == [0, 4, -1, -1, 5, 3]
    # Each known code decodes back to its parts.
    for c, s, a in zip(codes, g["sex"][0], g["age"][0], strict=True):
        if c >= 0:
            assert names[c] == f"{g['sex'][1][s]}|{g['age'][1][a]}"


def test_sensitive_groups_custom_bins_and_checks():
    g = sensitive_groups(np.array([1, 0]), np.array([25.0, 85.0]), age_bins=(20, 40, 60, 80))
    assert g["age"][0].tolist() == [1, 4]
    assert g["sex_x_age"][0].tolist() == [5 + 1, 4]
    assert len(g["sex_x_age"][1]) == 10
    with pytest.raises(ValueError, match="shape"):
        sensitive_groups(np.array([0, 1]), np.array([30.0]))
    with pytest.raises(ValueError, match="sex codes"):
        sensitive_groups(np.array([2]), np.array([30.0]))

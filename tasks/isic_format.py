"""The ISIC 2019 training set's format: file names, columns, values, and its error type.

The one definition of these names (docs/architecture.md#isic-2019): the reader
(:mod:`tasks.isic`), the cache (:mod:`tasks.cache`), the sensitive attributes
(:mod:`tasks.attributes`) and the synthetic generator (:mod:`tasks.synthetic`) import
them from here.
"""

from __future__ import annotations

from pathlib import Path

#: The eight diagnostic classes, in the column order of the ground-truth CSV.
ISIC_CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
#: The ninth label column: always 0 in the 2019 training set.
UNK_COLUMN = "UNK"
IMAGE_DIR = "ISIC_2019_Training_Input"
GROUND_TRUTH_CSV = "ISIC_2019_Training_GroundTruth.csv"
METADATA_CSV = "ISIC_2019_Training_Metadata.csv"
#: Metadata columns in the official file's order.
METADATA_COLUMNS = ("image", "age_approx", "anatom_site_general", "lesion_id", "sex")
# lesion_id and site are optional: early copies of the 2019 metadata lacked lesion_id.
REQUIRED_METADATA_COLUMNS = ("image", "age_approx", "sex")
OPTIONAL_METADATA_COLUMNS = ("anatom_site_general", "lesion_id")
#: Values of the ``sex`` column; a sample's sex code is the index here (-1 missing).
SEX_NAMES: tuple[str, ...] = ("female", "male")
#: Values of the ``anatom_site_general`` column.
SITES = ("anterior torso", "head/neck", "lateral torso", "lower extremity", "oral/genital",
         "palms/soles", "posterior torso", "upper extremity")
#: Age-group edges of the fairness report: ``<40``, ``40-59``, ``>=60``.
DEFAULT_AGE_BINS: tuple[float, ...] = (40, 60)
#: Image formats, most preferred first (``.jpg`` is the official one).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DOWNLOAD_HINT = (
    "Download the ISIC 2019 training data from https://challenge.isic-archive.com/data/#2019 "
    f"({IMAGE_DIR}.zip, {GROUND_TRUTH_CSV}, {METADATA_CSV}), unzip it into one folder and pass "
    "it with --data-dir (or set FLNAS_ISIC_DIR); or run with --synthetic to use generated "
    "ISIC-format data."
)


class DatasetError(ValueError):
    """Bad or missing dataset input; the message names the file, row and column.

    Attributes:
        file: The offending file or folder, if known.
        row: 1-based line number in ``file`` (the header is line 1), if known.
        column: Column name, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        file: Path | str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file = Path(file) if file is not None else None
        self.row = row
        self.column = column
        where = []
        if file is not None:
            where.append(f"file {file}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)

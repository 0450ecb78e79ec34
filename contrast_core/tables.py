"""A CSV of numeric features and a label column, read and checked without torch (pages check an
upload with it; `data` trains on what it returns). Every problem is a ValueError of one line.

No message quotes the file's contents (not even its header): a path may name any file the process
can read. Rows are counted from 1, the header not included.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO

import numpy as np

MIN_ROWS = 10
MAX_ROWS = 200_000  # the command line's limit (a demo sets its own for uploads)


def read(source: str | Path | IO[bytes] | None, label: str = "label", max_rows: int = MAX_ROWS,
         continuous: bool = False):  # fmt: skip
    """(features (N, F) float64, class ids (N,) int64, class names) of a CSV file or an open one; with
    `continuous`, (features, the label column as a continuous target (N,) float64, []).

    Labels may be strings or numbers; classes are the sorted distinct labels, as strings. A continuous
    target must be a finite number in every row, with at least two distinct values.
    """
    table = _parse(source, max_rows + 1)  # one extra row tells that the file is too long
    if len(table) == 0:
        raise ValueError("csv: the file has no rows")
    if len(table) > max_rows:
        raise ValueError(f"csv: more than {max_rows} rows (the limit is max_rows={max_rows})")
    if len(table) < MIN_ROWS:
        raise ValueError(f"csv: {len(table)} rows; at least {MIN_ROWS} are needed (a fifth are held out "
                         "to measure the embedding)")  # fmt: skip
    if label not in table.columns:
        raise ValueError(f"csv_label: label column '{label}' not found among the file's {_columns(table.shape[1])}"
                         f"{_separator_hint(table)}")  # fmt: skip
    _check_mostly_numbers(table, label)
    features = table.drop(columns=label).select_dtypes("number")
    if features.shape[1] == 0:
        raise ValueError(f"csv: no numeric feature columns beside the label (of {_columns(table.shape[1])}"
                         f"{_separator_hint(table)})")  # fmt: skip
    missing = (features.isna().any(axis=1) | table[label].isna()).to_numpy()
    if missing.any():
        raise ValueError(f"csv: {_rows(missing.sum())} missing values (first at row {missing.argmax() + 1})")
    values = features.to_numpy(dtype=np.float64)
    infinite = ~np.isfinite(values).all(axis=1)
    if infinite.any():
        raise ValueError(f"csv: {_rows(infinite.sum())} infinite values (first at row {infinite.argmax() + 1})")
    if continuous:
        return values, _target(table[label], label), []
    classes, y = np.unique(table[label].to_numpy(), return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"csv_label: label column '{label}' has {len(classes)} class (need at least 2)")
    if len(classes) > len(table) / 2:  # most classes a single row: hardly a positive pair to learn from
        raise ValueError(f"csv_label: label column '{label}' has {len(classes):,} classes in {len(table):,} rows; "
                         "a class needs rows that share it (is the label a continuous target?)")  # fmt: skip
    return values, y.astype(np.int64), [str(c) for c in classes]


def _check_mostly_numbers(table, label: str) -> None:
    """Refuses a feature column of numbers with a few that are not (a typo would silently drop the whole
    column: pandas reads it as text); columns of text are left out, as the page's caption says."""
    import pandas as pd

    for position, name in enumerate(table.columns, start=1):
        if name == label or pd.api.types.is_numeric_dtype(table[name]):
            continue
        given = table[name].notna().to_numpy()
        numbers = pd.to_numeric(table[name], errors="coerce").notna().to_numpy()
        if numbers.sum() > given.sum() / 2:
            row = (given & ~numbers).argmax() + 1
            raise ValueError(f"csv: column {position} (counting from 1) holds numbers but not at row {row} (a "
                             "feature column must be a number in every row)")  # fmt: skip


def _separator_hint(table) -> str:
    """ "; it looks separated by ';'": a one-column table whose header holds another separator."""
    if table.shape[1] != 1:
        return ""
    found = [sep for sep in (";", "\t", "|") if sep in str(table.columns[0])]
    return f"; it looks separated by {found[0]!r}: save it with commas" if found else ""


def feature_columns(head, label: str) -> tuple[list[str], list[str]]:
    """(the columns a run reads as features, the text columns it leaves out), from a file's first rows."""
    others = head.drop(columns=label, errors="ignore")
    used = list(others.select_dtypes("number").columns)
    return [str(c) for c in used], [str(c) for c in others.columns if c not in used]


def _target(column, label: str) -> np.ndarray:
    import pandas as pd

    target = np.array(pd.to_numeric(column, errors="coerce"), dtype=np.float64)  # a copy: writable
    bad = ~np.isfinite(target)
    if bad.any():
        raise ValueError(f"csv_label: a continuous target must be a finite number in every row; column '{label}' "
                         f"is not in {bad.sum()} rows (first at row {bad.argmax() + 1})")  # fmt: skip
    if np.ptp(target) == 0:
        raise ValueError(f"csv_label: column '{label}' has a single value: nothing to tell items apart by")
    return target


def head(source: str | Path | IO[bytes] | None, rows: int = 5):
    """The header and the first `rows` rows as a DataFrame (the rest is not read): a preview, and the
    choices of the label column. Raises the ValueError `read` would for a missing or unreadable file."""
    return _parse(source, rows)


def _parse(source: str | Path | IO[bytes] | None, rows: int):
    import pandas as pd

    if source is None or source == "":
        raise ValueError("csv: no file given (csv_path is empty)")
    if isinstance(source, str | Path) and Path(source).is_dir():
        raise ValueError(f"csv: a folder, not a file: {source}")
    if isinstance(source, str | Path) and not Path(source).is_file():
        raise ValueError(f"csv: file not found: {source}")
    try:
        return pd.read_csv(source, nrows=rows)
    except (ValueError, UnicodeDecodeError) as err:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise ValueError(f"csv: could not be read ({last_line(err)})") from err


def last_line(err: Exception) -> str:
    """The last non-empty line of an error's message (a parser's own words, without its traceback)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _columns(n: int) -> str:
    return "1 column" if n == 1 else f"{n:,} columns"


def _rows(n: int) -> str:
    return "1 row contains" if n == 1 else f"{n:,} rows contain"

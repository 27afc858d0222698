"""Read an untrusted CSV into text cells, row by row: a malformed row costs that row, not the file.

Both SCIN CSVs and the flat one-row-per-image CSV come from outside. The file is capped at
MAX_CSV_BYTES, its shape at MAX_CSV_COLUMNS columns, MAX_CSV_ROWS rows and MAX_CSV_CELLS cells (refused
with one line as soon as the header or the row past the cap is read, before any work grows with them),
and every cell at `cells.MAX_CELL_CHARS`; a row with more or fewer fields than the
header, a cell over the cap or bytes that are not UTF-8 is left out and reported with the line it starts
on; a file without a header, with repeated column names or with no readable row is one clear error.
pandas raises on the first row with too many fields, so the rows are split by the csv module and only
then handed to pandas (as text: ids are signed 64-bit integers, never let pandas make them numbers).
"""

from __future__ import annotations

import collections
import csv
import io
import itertools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from scinsearch import cells
from scinsearch.errors import ScinSearchError

if TYPE_CHECKING:
    import pandas as pd

MAX_CSV_BYTES = 64 * 1024 * 1024  # SCIN's biggest CSV is about 1.3 MB
# The shape of a table (docs/security.md). SCIN's: the cases CSV about 5,033 rows x 57 columns, the labels
# CSV 5,033 x 17, the flat CSV about 10,400 x 40 (about 420,000 cells). Each cap is over ten times that;
# rows past the caps (malformed or blank ones too) are never parsed, so neither is their warning made.
MAX_CSV_COLUMNS = 1_000
MAX_CSV_ROWS = 500_000
MAX_CSV_CELLS = 5_000_000  # rows x columns: what pandas and the payloads built from the rows hold
NOT_UTF8 = re.compile("[\udc80-\udcff]")  # bytes that are not UTF-8, as decoded with surrogateescape


def read_csv(path: Path, warnings: list[str] | None = None) -> pd.DataFrame:
    """Read an untrusted CSV as text cells (ids are signed 64-bit integers: never let pandas make them numbers).

    A malformed row is left out and reported in `warnings` with its line number (without `warnings`,
    it is an error); a file over MAX_CSV_BYTES, without a header or with no readable row is an error."""
    if not path.is_file():
        raise ScinSearchError(f"file not found: {path}")
    try:
        size = path.stat().st_size
        if size > MAX_CSV_BYTES:
            raise ScinSearchError(
                f"{path} is {size / 2**20:.0f} MiB (limit {MAX_CSV_BYTES // 2**20} MiB): the wrong file?"
            )
        text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        raise ScinSearchError(f"cannot read {path}: {exc.strerror or exc}") from None
    header, rows, lines, bad = parse_rows(text, path, check_utf8=NOT_UTF8.search(text) is not None)
    if bad and warnings is None:
        raise ScinSearchError(f"cannot read {path}: {bad[0]}")
    if bad and not rows:
        raise ScinSearchError(f"cannot read {path}: no readable rows ({len(bad)} malformed; {bad[0]})")
    if warnings is not None:
        warnings += [f"{path.name} {problem}" for problem in bad]
    # pandas only here: decode workers import this module with their records, and pandas (through pyarrow)
    # starts an allocator thread, where their fork server must have none (decoding.worker_context)
    import pandas as pd

    return pd.DataFrame(rows, columns=header, index=pd.Index(lines, name="line"), dtype=str)


def parse_rows(text: str, path: Path, check_utf8: bool) -> tuple[list[str], list[list[str]], list[int], list[str]]:
    """(header, well-formed rows, the line each starts on, 'line N: why' for each row left out)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    bad: list[str] = []
    max_rows = MAX_CSV_ROWS
    for count in itertools.count():  # every record the reader returns after the header: good, bad or blank
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            row = None
            bad.append(f"line {start}: {exc}: left out")
        if count > max_rows:
            raise ScinSearchError(
                f"cannot read {path}: over {max_rows:,} rows (limits: {MAX_CSV_ROWS:,} rows, {MAX_CSV_CELLS:,} "
                f"cells; SCIN's tables have about 10,400 rows): the wrong file?"
            )
        if not row:
            continue  # a blank line, or one the csv module could not split
        if header is None:
            header = check_header(row, path)
            max_rows = min(MAX_CSV_ROWS, MAX_CSV_CELLS // len(header)) + count  # the records before count too
            continue
        problem = row_problem(row, header, check_utf8)
        if problem:
            where = f"line {start}" if reader.line_num == start else f"lines {start}-{reader.line_num}"
            bad.append(f"{where}: {problem}: left out")
        else:
            rows.append(row)
            lines.append(start)
    if header is None:
        raise ScinSearchError(f"cannot read {path}: no header row")
    return header, rows, lines, bad


def check_header(row: list[str], path: Path) -> list[str]:
    if len(row) > MAX_CSV_COLUMNS:
        raise ScinSearchError(
            f"cannot read {path}: {len(row):,} columns (limit {MAX_CSV_COLUMNS:,}; SCIN's tables have at most "
            f"about 60): the wrong file?"
        )
    header = [name.strip() for name in row]
    if any(row_problem([name], ["column"], check_utf8=True) for name in header):
        raise ScinSearchError(f"cannot read {path}: its header row is not column names")
    repeated = sorted(name for name, count in collections.Counter(header).items() if count > 1)
    if repeated:
        raise ScinSearchError(f"cannot read {path}: repeated column name(s) {', '.join(map(repr, repeated))}")
    return header


def row_problem(row: list[str], header: list[str], check_utf8: bool) -> str | None:
    """Why a parsed row cannot be used, or None."""
    if len(row) != len(header):
        return f"{len(row)} fields where the header has {len(header)}"
    for name, value in zip(header, row):
        if len(value) > cells.MAX_CELL_CHARS:
            return f"column {name!r} holds {len(value)} characters (limit {cells.MAX_CELL_CHARS})"
        if check_utf8 and NOT_UTF8.search(value):
            return f"column {name!r} is not UTF-8 text"
    return None


def require_columns(frame: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ScinSearchError(f"{path} lacks the column(s) {', '.join(missing)}")

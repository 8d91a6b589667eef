"""Read contract files (CSV or Parquet; one file or a folder) into DuckDB tables, parsed and
checked column by column against `ingest.contract`.

Every loaded table keeps `_fi` (the file's index in `InputFiles.files`) and `_row` (the 1-based
data row in that file), so that any later check can name the file and rows it is about. CSV
files are read as text and parsed here, so a bad value anywhere in a file is caught, not only
in the rows a type sniffer looked at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from ingest.contract import (
    CONTRACT_DOC,
    LIST_SEPARATOR,
    ONE_OF,
    TIMESTAMP,
    contract_error,
    entity,
    is_required,
    limit,
    vocabulary,
)
from mmrec.id_map import CONTROL

CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv")
PARQUET_SUFFIXES = (".parquet", ".pq")
# Offset that orders rows by (file, row) in one BIGINT: `_fi * ROWS_PER_FILE + _row`.
ROWS_PER_FILE = 1 << 40
_INTEGER_TYPES = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
}
_NUMBER_TYPES = {"FLOAT", "DOUBLE", "REAL"}
# Times as pandas holds them (ns) fit in these years; anything outside is a unit mistake.
_TIME_RANGE = "TIMESTAMPTZ '1678-01-01' AND TIMESTAMPTZ '2262-01-01'"
_DUCK_TYPES = {
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.string(): "VARCHAR",
    TIMESTAMP: "TIMESTAMPTZ",
    pa.list_(pa.string()): "VARCHAR[]",
    pa.binary(): "VARCHAR",  # a path; bytes stay BLOB
    pa.list_(pa.binary()): "VARCHAR[]",
}


@dataclass(frozen=True)
class InputFiles:
    """The files of one contract table, as the user gave them (a file or a folder)."""

    table: str
    given: Path
    files: tuple[Path, ...]

    def name(self, index: int) -> str:
        """How messages name file `index`: the given file, or folder/file."""
        path = self.files[index]
        return path.name if path == self.given else f"{self.given.name}/{path.name}"


@dataclass
class Loaded:
    """A contract table loaded into DuckDB table `name`: every contract column (absent ones
    as typed NULLs), plus `_fi`, `_row`."""

    name: str
    inputs: InputFiles
    present: set[str]
    ignored: list[str]
    rows: dict[str, int] = field(default_factory=dict)


def discover(table: str, path: Path) -> InputFiles:
    """The CSV/Parquet files at `path` (one file, or every such file in a folder, sorted)."""
    path = Path(path)
    if path.is_dir():
        files = tuple(sorted(p for p in path.iterdir() if p.is_file() and _kind(p)))
        if not files:
            raise contract_error(
                f"{path}",
                None,
                f"the {table} folder holds no CSV or Parquet file",
                [],
                0,
                f"put {table} files ending in .csv or .parquet there",
            )
        return InputFiles(table, path, files)
    if not path.is_file():
        raise contract_error(
            f"{path}", None, f"no such {table} file or folder", [], 0, "check the path"
        )
    if not _kind(path):
        raise contract_error(
            f"{path}",
            None,
            f"the {table} file is neither CSV nor Parquet",
            [],
            0,
            "give a .csv or .parquet file (or a folder of them)",
        )
    return InputFiles(table, path, (path,))


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def sql_string(text: str) -> str:
    """`text` as a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _scan_one(path: Path, index: int) -> str:
    if _kind(path) == "csv":
        return (
            f"SELECT {index} AS _fi, ordinality AS _row, * EXCLUDE (ordinality) "
            f"FROM read_csv({sql_string(str(path))}, all_varchar = true, header = true) "
            "WITH ORDINALITY"
        )
    return (
        f"SELECT {index} AS _fi, file_row_number + 1 AS _row, * EXCLUDE (file_row_number) "
        f"FROM read_parquet({sql_string(str(path))}, file_row_number = true)"
    )


def scan_sql(inputs: InputFiles) -> str:
    """One query over every file of `inputs`, columns matched by name."""
    return " UNION ALL BY NAME ".join(
        f"({_scan_one(path, i)})" for i, path in enumerate(inputs.files)
    )


def _run(con: duckdb.DuckDBPyConnection, sql: str, inputs: InputFiles) -> list[tuple]:
    """Run `sql` and fetch its rows; a reader's failure becomes a contract error naming the
    input."""
    try:
        return con.execute(sql).fetchall()
    except duckdb.Error as err:
        raise contract_error(
            str(inputs.given),
            None,
            f"cannot be read as CSV/Parquet: {str(err).splitlines()[0]}",
            [],
            0,
            "write a CSV with a header row, or a Parquet file",
        ) from None


@dataclass(frozen=True)
class _Parse:
    """How one present column is parsed: the value, and when a row's raw value is bad."""

    value: str
    bad: str
    problem: str
    fix: str


def whole_number_sql(x: str) -> str:
    """A whole number from any scalar (3.0 is 3; 3.5 and 'u3' are not numbers)."""
    return (
        f"CASE WHEN TRY_CAST({x} AS DOUBLE) = TRY_CAST({x} AS BIGINT) "
        f"THEN TRY_CAST({x} AS BIGINT) END"
    )


def _split_sql(x: str, duck_type: str) -> str:
    """A list column: a list as is, or text split on `|`; elements trimmed, empties dropped."""
    items = x if duck_type.endswith("[]") else f"string_split({x}, '{LIST_SEPARATOR}')"
    return (
        f"list_filter(list_transform({items}, lambda s: trim(CAST(s AS VARCHAR))), "
        "lambda s: s <> '')"
    )


def _time_sql(x: str, duck_type: str) -> str:
    """A UTC time from ISO text (naive means UTC: the session zone), unix seconds or a time."""
    if duck_type.startswith(("TIMESTAMP", "DATE")):
        parsed = f"CAST({x} AS TIMESTAMPTZ)"
    elif duck_type in _INTEGER_TYPES | _NUMBER_TYPES or duck_type.startswith("DECIMAL"):
        parsed = f"try(to_timestamp(CAST({x} AS DOUBLE)))"
    else:
        parsed = (
            f"CASE WHEN TRY_CAST({x} AS DOUBLE) IS NOT NULL "
            f"THEN try(to_timestamp(TRY_CAST({x} AS DOUBLE))) "
            f"ELSE TRY_CAST({x} AS TIMESTAMPTZ) END"
        )
    return f"CASE WHEN {parsed} BETWEEN {_TIME_RANGE} THEN {parsed} END"


def _parse(column: pa.Field, duck_type: str, where: str) -> _Parse:
    """The parse of `column` from a source column of DuckDB type `duck_type`."""
    x = f'"{column.name}"'
    is_list = duck_type.endswith("[]")
    scalar = not is_list and duck_type != "BLOB" and not duck_type.startswith(("STRUCT", "MAP"))
    numeric = duck_type in _INTEGER_TYPES | _NUMBER_TYPES or duck_type.startswith("DECIMAL")
    kind, allowed = column.type, vocabulary(column)
    if entity(column) is not None:
        parse = _id_parse(x, duck_type, pa.types.is_list(kind))
        ok = duck_type.removesuffix("[]") in _INTEGER_TYPES | {"VARCHAR", "UUID"}
    elif allowed:
        value = f"nullif(trim(CAST({x} AS VARCHAR)), '')"
        listed = ", ".join(sql_string(v) for v in allowed)
        problem, fix = "holds values outside the vocabulary", f"use one of {', '.join(allowed)}"
        parse, ok = _Parse(value, f"{value} NOT IN ({listed})", problem, fix), scalar
    elif kind == pa.int64():
        value = f"CAST({x} AS BIGINT)" if duck_type in _INTEGER_TYPES else whole_number_sql(x)
        fix = "write whole numbers"
        parse = _Parse(value, _unparsed(x, value), "is not a whole number", fix)
        ok = scalar and (numeric or duck_type == "VARCHAR")
    elif kind == pa.float64():
        value = f"TRY_CAST({x} AS DOUBLE)"
        fix = "write numbers (a dot for decimals)"
        parse = _Parse(value, _unparsed(x, value), "is not a number", fix)
        ok = scalar and (numeric or duck_type == "VARCHAR")
    elif kind == TIMESTAMP:
        value = _time_sql(x, duck_type)
        fix = (
            "write ISO-8601 times (2024-05-01T12:00:00Z; no zone means UTC) or unix seconds "
            "(not milliseconds)"
        )
        parse = _Parse(value, _unparsed(x, value), "holds times that cannot be parsed", fix)
        ok = scalar and duck_type != "BOOLEAN"
    elif kind == pa.string():
        parse, ok = _Parse(f"CAST({x} AS VARCHAR)", "false", "", ""), scalar
    elif kind == pa.list_(pa.string()):
        parse, ok = _Parse(_split_sql(x, duck_type), "false", "", ""), is_list or scalar
    elif kind == pa.binary():
        parse, ok = _Parse(x, "false", "", ""), duck_type in ("VARCHAR", "BLOB")
    elif kind == pa.list_(pa.binary()):
        value = x if duck_type == "BLOB[]" else _split_sql(x, duck_type)
        ok = duck_type in ("VARCHAR", "VARCHAR[]", "BLOB[]")
        parse = _Parse(value, "false", "", "")
    else:  # pragma: no cover - every contract type is handled above
        raise TypeError(f"no parser for {kind}")
    parse = _bounded(column, parse)
    if not ok:
        ids = entity(column) is not None
        raise contract_error(
            where,
            column.name,
            f"has type {duck_type}, which cannot hold {'ids (integers or strings)' if ids else kind}",
            [],
            0,
            f"store {column.name} as {'integers or text' if ids else kind} (see {CONTRACT_DOC})",
        )
    if column.nullable:
        return parse
    return _Parse(
        parse.value,
        f"{x} IS NULL OR ({parse.bad})",
        f"{parse.problem or 'has bad values'} or is empty",
        f"{parse.fix or 'fill it'}; every row needs one",
    )


def _id_parse(x: str, duck_type: str, listed: bool) -> _Parse:
    """An id column as text (ingest/ids.py makes keys of it): an integer as its digits, a
    string trimmed; in a list, empty entries dropped. A blank id or one holding control
    characters is bad (the length limit is the column's `max_chars`)."""
    control = sql_string(CONTROL.pattern)
    if listed:
        source = x if duck_type.endswith("[]") else f"CAST({x} AS VARCHAR)"
        value = _split_sql(source, duck_type)
        bad = f"len(list_filter({value}, lambda s: regexp_matches(s, {control}))) > 0"
        problem = "holds ids with control characters"
    else:
        value = f"nullif(trim(CAST({x} AS VARCHAR)), '')"
        bad = f"{x} IS NOT NULL AND ({value} IS NULL OR regexp_matches({value}, {control}))"
        problem = "holds blank ids or ids with control characters"
    return _Parse(value, bad, problem, "give ids as integers or text without control characters")


def _bounded(column: pa.Field, parse: _Parse) -> _Parse:
    """`parse` with the column's `max_items` (lists) and `max_chars` (each text) checks added
    to its own."""
    chars, items = limit(column, "max_chars"), limit(column, "max_items")
    is_list = pa.types.is_list(column.type)
    checks, limits = [], []
    if items is not None and is_list:
        checks.append(f"len({parse.value}) > {items}")
        limits.append(f"{items} entries")
    if chars is not None:
        checks.append(
            f"len(list_filter({parse.value}, lambda s: length(s) > {chars})) > 0"
            if is_list
            else f"length({parse.value}) > {chars}"
        )
        limits.append(f"{chars} characters{' each' if is_list else ''}")
    if not checks:
        return parse
    problem = f"holds values over the limit ({', '.join(limits)})"
    fix = f"keep values within {' and '.join(limits)}"
    if parse.bad == "false":
        return _Parse(parse.value, " OR ".join(checks), problem, fix)
    return _Parse(
        parse.value,
        " OR ".join([f"({parse.bad})", *checks]),
        f"{parse.problem}, or {problem}",
        f"{parse.fix}; {fix}",
    )


def _unparsed(x: str, value: str) -> str:
    """A raw value is there but does not parse."""
    return f"{x} IS NOT NULL AND {value} IS NULL"


def _flag(column: str) -> str:
    return f'"_bad_{column}"'


def load(
    con: duckdb.DuckDBPyConnection, inputs: InputFiles, schema: pa.Schema, name: str
) -> Loaded:
    """Parse every file of `inputs` into DuckDB table `name` and check it against `schema`.

    Raises DataContractError (naming the file, the column, the first bad rows and the fix) for
    an empty file, a missing required column, a column of the wrong type or a bad value.
    """
    where = str(inputs.given)
    for path in inputs.files:
        if path.stat().st_size == 0:
            raise contract_error(
                str(path), None, "the file is empty", [], 0, "write a header row and data rows"
            )
    scan = scan_sql(inputs)
    types = {
        column: duck_type
        for column, duck_type, *_ in _run(con, f"DESCRIBE {scan}", inputs)
        if column not in ("_fi", "_row")
    }
    _check_columns(inputs, schema, set(types), where)
    parses = {f.name: _parse(f, types[f.name], where) for f in schema if f.name in types}
    selects = ["_fi", "_row"] + [
        f'{parses[f.name].value} AS "{f.name}"'
        if f.name in parses
        else f'NULL::{_DUCK_TYPES[f.type]} AS "{f.name}"'
        for f in schema
    ]
    selects += [f"coalesce({p.bad}, false) AS {_flag(c)}" for c, p in parses.items()]
    _run(con, f"CREATE TEMP TABLE {name} AS SELECT {', '.join(selects)} FROM ({scan})", inputs)
    flags = ", ".join(f"bool_or({_flag(c)})" for c in parses)
    failing = con.execute(f"SELECT {flags} FROM {name}").fetchall()[0]
    for column, bad in zip(parses, failing, strict=True):
        if bad:
            _raise_bad_values(con, inputs, scan, name, column, parses[column])
    counts = dict(con.execute(f"SELECT _fi, count(*) FROM {name} GROUP BY _fi").fetchall())
    rows = {inputs.name(i): int(counts.get(i, 0)) for i in range(len(inputs.files))}
    empty = [file for file, n in rows.items() if n == 0]
    if empty:
        raise contract_error(
            where, None, f"{', '.join(empty)} has no data rows", [], 0, "give at least one row"
        )
    contract = {f.name for f in schema}
    return Loaded(name, inputs, set(parses), sorted(set(types) - contract), rows)


def _check_columns(inputs: InputFiles, schema: pa.Schema, found: set[str], where: str) -> None:
    missing = [f.name for f in schema if is_required(f) and f.name not in found]
    one_of = ONE_OF.get(inputs.table, ())
    if one_of and not found & set(one_of):
        missing.append(" or ".join(one_of))
    if missing:
        raise contract_error(
            where,
            missing[0],
            f"required column missing (columns found: {', '.join(sorted(found)) or 'none'})",
            [],
            0,
            f"add {' and '.join(missing)} to the {inputs.table} file (the contract: "
            f"{CONTRACT_DOC})",
        )


def _raise_bad_values(
    con: duckdb.DuckDBPyConnection,
    inputs: InputFiles,
    scan: str,
    name: str,
    column: str,
    parse: _Parse,
) -> None:
    """Raise the contract error of `column`, with its first bad rows read back from the files
    (their raw values, which the parsed table no longer holds)."""
    total = con.execute(f"SELECT count(*) FROM {name} WHERE {_flag(column)}").fetchall()[0][0]
    rows = con.execute(
        f'SELECT _fi, _row, CAST("{column}" AS VARCHAR) FROM ({scan}) '
        f"WHERE coalesce({parse.bad}, false) ORDER BY _fi, _row LIMIT 5"
    ).fetchall()
    raise contract_error(
        str(inputs.given),
        column,
        parse.problem,
        [example(inputs.name(fi), row, value) for fi, row, value in rows],
        int(total),
        parse.fix,
    )


EXAMPLE_CHARS = 80  # a value shown in a message is cut here (a 1 MB title stays off screen)


def example(file: str, row: int, value: object) -> str:
    """'<file> row <n>: <value>' ('empty' for a missing value; long values cut)."""
    shown = "empty" if value is None else repr(value)
    if len(shown) > EXAMPLE_CHARS:
        shown = f"{shown[:EXAMPLE_CHARS]}... ({len(shown)} characters)"
    return f"{file} row {row}: {shown}"

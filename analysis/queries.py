"""The ready queries shipped as `analysis/sql/<name>.sql`, and running SQL in a session.

Each file is one SELECT over the stable view names, with a header the plain `duckdb` CLI
ignores: `-- title: ...` and `-- requires: view, view` (the views it reads; a query whose
views are missing, e.g. embeddings before `mmrec content encode`, is skipped with a reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from analysis import AnalysisError
from analysis.views import view_names

SQL_DIR = Path(__file__).resolve().parent / "sql"


# What `mmrec sql` runs: reading statements only (DESCRIBE, SHOW, SUMMARIZE and FROM-first
# queries parse as SELECT). COPY, ATTACH, INSTALL/LOAD, PRAGMA, SET, CREATE, EXPORT ... are
# refused before they run.
READ_STATEMENTS = frozenset({duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN})


class QueryError(AnalysisError):
    """DuckDB rejected a query (the message is DuckDB's), or it is not a reading statement."""


@dataclass(frozen=True)
class Query:
    name: str
    title: str
    requires: tuple[str, ...]
    sql: str

    def missing(self, con: duckdb.DuckDBPyConnection) -> list[str]:
        """The required views this session lacks."""
        present = view_names(con)
        return [view for view in self.requires if view not in present]


def _header(text: str, key: str) -> str:
    prefix = f"-- {key}:"
    for line in text.splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    return ""


def load(name: str) -> Query:
    path = SQL_DIR / f"{name}.sql"
    if not path.exists():
        raise AnalysisError(f"no query {name!r}; known: {', '.join(names())}")
    text = path.read_text()
    requires = tuple(v.strip() for v in _header(text, "requires").split(",") if v.strip())
    return Query(name, _header(text, "title") or name, requires, text)


def names() -> list[str]:
    return sorted(path.stem for path in SQL_DIR.glob("*.sql"))


def run_sql(con: duckdb.DuckDBPyConnection, sql: str) -> pd.DataFrame:
    """Run reading statements (READ_STATEMENTS; the last one's rows are returned); any other
    statement, and DuckDB's parser, binder and runtime errors, become QueryError."""
    try:
        for statement in duckdb.extract_statements(sql):
            if statement.type not in READ_STATEMENTS:
                raise QueryError(
                    f"mmrec sql runs read-only queries: {statement.type.name} statements are "
                    f"refused ({str(statement.query).strip()[:60]!r}). Fix: write a SELECT; to "
                    "save a result, run the plain duckdb CLI over data/analysis/views.sql"
                )
        relation = con.sql(sql)
        return relation.df() if relation is not None else pd.DataFrame()
    except duckdb.Error as err:
        raise QueryError(str(err)) from None


def run(con: duckdb.DuckDBPyConnection, name: str) -> pd.DataFrame:
    """Run a ready query; AnalysisError names the missing views when it cannot run."""
    query = load(name)
    missing = query.missing(con)
    if missing:
        raise AnalysisError(f"query {name!r} needs views {missing}, which this workspace lacks")
    return run_sql(con, query.sql)

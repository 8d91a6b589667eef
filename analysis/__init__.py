"""Analysis in DuckDB: one session over the raw world, the Feast offline sources, an export of
the online store and the training sets, under stable view names; ready SQL queries; a
train/serve skew check; a markdown report with plots.

Layout: `catalog` (feature views from the Feast registry), `online_export` (online store ->
Parquet), `views` (the DuckDB session), `queries` (the shipped `sql/*.sql`), `skew`, `plots`,
`report`, `cli`.
"""

from __future__ import annotations

from mmrec.errors import UserError


class AnalysisError(UserError):
    """The analysis cannot run as asked; the message says what is missing or wrong."""

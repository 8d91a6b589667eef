"""The table of every setting and environment variable in docs/configuration.md, generated from
`Settings` (mmrec/settings.py) so it cannot drift: `python -m mmrec.settings_reference` (run by
`make docs`) rewrites the table between its markers; tests/test_docs.py fails when the
committed one differs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mmrec.settings import FROM_ENVIRONMENT, REPO_ROOT, SECRETS, Settings, env_var

CONFIGURATION_PAGE = REPO_ROOT / "docs" / "configuration.md"
BEGIN = "<!-- BEGIN settings table: generated from mmrec/settings.py by `make docs` -->"
END = "<!-- END settings table -->"


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    value: Any = field.default_factory() if field.default_factory else field.default
    if name == "workspace":
        return "the repository checkout"
    if isinstance(value, bool):
        return f"`{int(value)}`"
    if value is None:
        return "unset"
    if value in ("", {}):
        return "empty"
    return f"`{value}`"


def settings_table() -> str:
    """A Markdown table: variable, Settings field, default, description; one row a field."""
    rows = [
        "| Variable | Setting | Default | What it sets |",
        "| --- | --- | --- | --- |",
    ]
    for name in FROM_ENVIRONMENT:
        variable = env_var(name)
        text = Settings.model_fields[name].description or ""
        if name in SECRETS:
            text += f" Secret: or the file `{variable}_FILE` names; never printed or logged."
        rows.append(f"| `{variable}` | `{name}` | {_default(name)} | {text} |")
    return "\n".join(rows) + "\n"


def with_table(page: str) -> str:
    """`page` with the text between the markers replaced by the current table."""
    if BEGIN not in page or END not in page:
        raise ValueError(f"{CONFIGURATION_PAGE} lacks the markers {BEGIN!r} ... {END!r}")
    head, rest = page.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{settings_table()}{END}{tail}"


def main(page: Path = CONFIGURATION_PAGE) -> int:
    """Rewrite the table in `page` (a no-op when it is current)."""
    text = page.read_text()
    updated = with_table(text)
    if updated != text:
        page.write_text(updated)
        sys.stdout.write(f"updated the settings table in {page}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

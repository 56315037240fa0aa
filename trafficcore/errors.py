"""Errors that end a command with a clear message and exit code 2.

Every piece of bad input is reported as one `DataError` that names the file, the row and the
column, so that a user can open the file and fix it. Nothing is written to the store when one
is raised: loaders build the canonical tables in memory and the store writes them in one
transaction.
"""

from __future__ import annotations

import sys


class TrafficCoreError(Exception):
    """Base class for errors that are the user's to fix (exit code 2)."""


class DataError(TrafficCoreError):
    """Bad input data: names the file, the row (1-based line in the file) and the column."""

    def __init__(self, file: str, message: str, row: int | None = None, column: str | None = None):
        self.file = str(file)
        self.row = row
        self.column = column
        self.message = message
        where = [self.file]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:  # a header cell can be as long as any other: cut like one
            where.append(f"column '{column if len(str(column)) <= SHOWN_CHARS else str(column)[:SHOWN_CHARS] + '…'}'")
        super().__init__(f"{', '.join(where)}: {message}")


#: Longest piece of a file echoed in an error: one 10 MB cell must not become 10 MB of terminal output.
SHOWN_CHARS = 80
#: Most items of a list (column names) echoed in an error.
SHOWN_ITEMS = 12


def shown(value: object) -> str:
    """A cell (or list of header names) as an error quotes it: numbers plainly, text quoted and cut short.

    `repr` would print numpy scalars as `np.float64(inf)` and echo a cell whole, however long.
    """
    if isinstance(value, list | tuple):
        items = [shown(v) for v in value[:SHOWN_ITEMS]]
        more = [f"… {len(value) - SHOWN_ITEMS} more"] if len(value) > SHOWN_ITEMS else []
        return "[" + ", ".join(items + more) + "]"
    # numpy is looked up, not imported: a numpy scalar can only exist once numpy is loaded, and every
    # command imports this module, so importing numpy here would slow `trafficcore --help` (issue 15).
    np = sys.modules.get("numpy")
    floats: tuple[type, ...] = (float,) + ((np.floating,) if np is not None else ())
    ints: tuple[type, ...] = (int,) + ((np.integer,) if np is not None else ())
    bools: tuple[type, ...] = (bool,) + ((np.bool_,) if np is not None else ())
    if isinstance(value, ints + floats) and not isinstance(value, bools):
        return f"{value:g}" if isinstance(value, floats) else str(int(value))
    text = str(value)
    if len(text) > SHOWN_CHARS:
        text = text[:SHOWN_CHARS] + "…"
    return repr(text)

"""Errors that end a command with a clear message and exit code 2.

Every piece of bad input is reported as one `DataError` that names the file, the row and the
column, so that a user can open the file and fix it. Nothing is written to the store when one
is raised: loaders build the canonical tables in memory and the store writes them in one
transaction.
"""

from __future__ import annotations


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
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {message}")

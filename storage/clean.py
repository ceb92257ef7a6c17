"""Rows made storable before they are written, and which write failures are a row's fault.

Text a provider or a caller wrote reaches the database in a finished job's row: a NUL
character (PostgreSQL's text types cannot hold U+0000, and one such row used to fail its
whole batch) or a model name longer than its column. `storable` mends those in place, so
such a row is written rather than set aside. The JSON columns (`result`, `accounting`) are
PostgreSQL `json`, which keeps `\\u0000` as written (`jsonb` would refuse it): left alone.

`row_fault` tells a batch write that failed because of what a row holds (split the batch and
set the row aside) from one that failed because the database is out of reach or broken as a
whole (give the batch back and try again later).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, Table, TypeDecorator
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, StatementError

REPLACEMENT = "\ufffd"

# Free text cut to its column's length; the other text columns are identities or fixed words,
# which a cut would corrupt: too long, they fail the row, which is then set aside.
_CUT_TO_FIT = frozenset({"model", "provider", "error_type"})

# SQLSTATE classes of errors about the data itself: data exceptions, integrity violations.
_ROW_SQLSTATE_CLASSES = ("22", "23")


def _text_columns(table: Table) -> list[tuple[str, int | None]]:
    out = []
    for column in table.columns:
        kind = column.type
        if isinstance(kind, TypeDecorator):  # SQLModel's AutoString decorates a String
            kind = kind.impl_instance
        if isinstance(kind, String):
            out.append((column.name, kind.length if column.name in _CUT_TO_FIT else None))
    return out


_COLUMNS: dict[str, list[tuple[str, int | None]]] = {}


def storable(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` (changed in place) with every text value storable in `table`: NUL characters
    replaced by U+FFFD, free text cut to its column's length."""
    columns = _COLUMNS.get(table.name)
    if columns is None:
        columns = _COLUMNS[table.name] = _text_columns(table)
    for row in rows:
        for name, length in columns:
            value = row.get(name)
            if type(value) is not str:
                continue
            if "\x00" in value:
                value = row[name] = value.replace("\x00", REPLACEMENT)
            if length is not None and len(value) > length:
                row[name] = value[:length]
    return rows


def row_fault(exc: BaseException) -> bool:
    """True when a failed write is the fault of what its rows hold (a value the database or
    its driver refuses), False when the database is unreachable or failing as a whole."""
    if isinstance(exc, DisconnectionError):
        return False
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return False
        if isinstance(exc, IntegrityError):
            return True
        # asyncpg's errors arrive as the base DBAPIError: its SQLSTATE says whose fault it is
        state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if isinstance(state, str):
            return state[:2] in _ROW_SQLSTATE_CLASSES
        # sqlite3's: OperationalError (locked, disk I/O), InterfaceError, ProgrammingError
        # (no such table) are the database's; DataError is the row's
        return type(exc).__name__ == "DataError"
    if isinstance(exc, StatementError):  # a value the driver or the JSON encoder would not take
        return isinstance(exc.orig, ValueError | TypeError | ArithmeticError | UnicodeError)
    state = getattr(exc, "sqlstate", None)  # a driver error that arrived unwrapped
    if isinstance(state, str):
        return state[:2] in _ROW_SQLSTATE_CLASSES
    # raised before the statement was built: a datetime out of range, an integer SQLite cannot hold
    return isinstance(exc, ValueError | TypeError | ArithmeticError | UnicodeError)

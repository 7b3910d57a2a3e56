"""SQLAlchemy statements run on a raw ``sqlite3`` connection, for the receiver's hot path.

Why: since instance files are written through the file pool (``medgate.store.filepool``), the
index commit is the longest step of a C-STORE on one association, and part of it is
SQLAlchemy's execution machinery (connection checkout, transaction and result objects) on the
association thread. Running the same statements on a dedicated ``sqlite3`` connection raised
``bench/ingest.py`` from 0.51 to 0.57x storescp (eight alternating rounds, every one faster).

Nothing is written by hand: each statement is compiled once by SQLAlchemy against the same
tables, and its values go through ``construct_params`` (literal values, defaults) and the
column types' own bind processors, so a row is stored exactly as the SQLAlchemy path stores it
(a test compares the two). The connection has the index's pragmas (WAL, ``synchronous=FULL``,
busy timeout) and its transactions take the write lock at ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement


class CompiledStatement:
    """One SQLAlchemy statement, compiled for ``dialect`` (qmark parameters)."""

    def __init__(
        self, statement: ClauseElement, dialect: Dialect, column_keys: Sequence[str] | None = None
    ) -> None:
        compiled = statement.compile(
            dialect=dialect, column_keys=list(column_keys) if column_keys else None
        )
        assert isinstance(compiled, SQLCompiler)  # a DML statement compiles to SQL
        self._compiled = compiled
        self.sql = str(compiled)
        self.names: list[str] = list(compiled.positiontup or [])
        self._processors: dict[str, Callable[[Any], Any] | None] = {
            # the dialect's implementation of the type (SQLite's DATETIME formats the string
            # SQLAlchemy reads back), not the generic type, which would leave it to sqlite3
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for name, bind in compiled.binds.items()
        }

    def parameters(self, values: Mapping[str, Any]) -> list[Any]:
        """The positional values for ``values``, as SQLAlchemy would bind them."""
        params = self._compiled.construct_params(dict(values))
        assert params is not None  # a SQLCompiler always builds parameters
        bound = []
        for name in self.names:
            value = params[name]
            processor = self._processors.get(name)
            bound.append(processor(value) if processor is not None and value is not None else value)
        return bound


class SqliteHotPath:
    """A dedicated ``sqlite3`` connection that runs compiled statements in one transaction."""

    def __init__(self, database: str, configure: Callable[[Any, Any], None]) -> None:
        self.connection = sqlite3.connect(
            database, isolation_level=None, check_same_thread=False, timeout=30
        )
        configure(self.connection, None)  # the index's own pragmas

    def run(
        self, steps: Sequence[tuple[CompiledStatement, Mapping[str, Any]]], *, stop_on_empty: int
    ) -> bool:
        """Execute ``steps`` in one transaction; if step ``stop_on_empty`` returns no row, commit
        what ran so far and return False (an ``INSERT ... ON CONFLICT DO NOTHING RETURNING``
        that inserted nothing). Raises (after a rollback) what sqlite3 raises."""
        conn = self.connection
        conn.execute("BEGIN IMMEDIATE")
        try:
            for position, (statement, values) in enumerate(steps):
                cursor = conn.execute(statement.sql, statement.parameters(values))
                if position == stop_on_empty and cursor.fetchone() is None:
                    conn.execute("COMMIT")
                    return False
                cursor.close()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return True

    def close(self) -> None:
        self.connection.close()

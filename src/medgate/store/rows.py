"""Typed rows: a store dataclass filled from a table row, field by column name, and the reads
that hand them out.

Every store module hands out frozen dataclasses instead of ``dict`` rows; building one from its
row is the same step everywhere (take each field's column, make each datetime UTC-aware, since
SQLite hands back naive ones), so it is written once here and each store names only the columns
it decodes (JSON text, a status enum). The reads take the store's way to open a read connection
(``Database.read`` or ``Engine.connect``) and a builder for each row.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.sql.elements import ColumnElement

from medgate.store.engine import aware

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")
R = TypeVar("R")
Connect = Callable[[], Connection]


def from_row(cls: type[T], data: Mapping[Any, Any], **decoded: Any) -> T:
    """An instance of the dataclass ``cls``: each field from ``decoded`` if given there, else
    from the row's column of the same name (a field with a default may have no column)."""
    values = {
        f.name: _utc(data[f.name])
        for f in dataclasses.fields(cls)
        if f.name not in decoded and f.name in data
    }
    return cls(**values, **decoded)


def _utc(value: Any) -> Any:
    return aware(value) if isinstance(value, dt.datetime) else value


def fetch_all(connect: Connect, query: sa.Select[Any], build: Callable[[RowMapping], R]) -> list[R]:
    """Every row the query selects, built."""
    with connect() as conn:
        return [build(row) for row in conn.execute(query).mappings()]


def fetch_one(
    connect: Connect, query: sa.Select[Any], build: Callable[[RowMapping], R]
) -> R | None:
    """The query's first row, built; None when it selects nothing."""
    with connect() as conn:
        row = conn.execute(query).mappings().first()
    return build(row) if row is not None else None


def count_rows(connect: Connect, table: sa.Table, *where: ColumnElement[bool]) -> int:
    """How many rows of ``table`` match ``where``."""
    with connect() as conn:
        query = sa.select(sa.func.count()).select_from(table).where(*where)
        return int(conn.execute(query).scalar_one())

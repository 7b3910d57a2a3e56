"""Typed rows: a store dataclass filled from a table row, field by column name.

Every store module hands out frozen dataclasses instead of ``dict`` rows; building one from its
row is the same step everywhere (take each field's column, make each datetime UTC-aware, since
SQLite hands back naive ones), so it is written once here and each store names only the columns
it decodes (JSON text, a status enum).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from medgate.store.engine import aware

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


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

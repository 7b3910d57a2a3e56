"""The database connection the store's modules share: engine, SQLite pragmas, one writer lock.

SQLite runs in WAL mode with ``synchronous=FULL`` so that a commit survives ``kill -9``; it has
one writer, so writers take a lock (in-process and an ``flock`` shared by processes) instead of
retrying on "database is locked".
PostgreSQL needs neither: its writers run concurrently and claims use ``FOR UPDATE SKIP LOCKED``;
its connections are checked before use and bounded in time (``postgres_options``).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; everything medgate stores is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def sqlite_pragmas(dbapi_conn: Any, _record: Any = None) -> None:
    """Durability and concurrency settings for every SQLite connection the store opens."""
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


PG_CONNECT_TIMEOUT_S = 10
PG_LOCK_TIMEOUT_MS = 20_000


def postgres_options(url: str) -> dict[str, Any]:
    """Engine options that let a PostgreSQL index survive a restart, a killed backend or a lock.

    ``pool_pre_ping`` tests a pooled connection before use, so one whose backend was terminated
    or whose server restarted is replaced instead of failing the next write; a connect timeout
    bounds the wait on an unreachable server; ``lock_timeout`` turns a lock held elsewhere into
    an error after 20 s (a C-STORE then gets a failure status the peer retries on) instead of a
    wait without end. A URL that sets its own ``options`` keeps them.
    """
    connect_args: dict[str, Any] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
    if "options=" not in url:
        connect_args["options"] = f"-c lock_timeout={PG_LOCK_TIMEOUT_MS}"
    return {"pool_pre_ping": True, "connect_args": connect_args}


class SqliteWriteLock:
    """One SQLite writer at a time, across threads and processes (several receiver processes
    share one index file).

    SQLite's own busy handler retries a locked write after sleeps of up to 100 ms; an ``flock``
    on a file beside the database instead wakes the next writer the moment the lock is free.
    """

    def __init__(self, database: str | None) -> None:
        self._thread_lock = threading.Lock()
        self._fd: int | None = None
        if database and database != ":memory:" and not database.startswith("file:"):
            self._fd = os.open(f"{database}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._thread_lock.release()
                raise

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Database:
    """One engine (SQLite or PostgreSQL) and the in-process writer lock SQLite needs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(postgres_options(url))
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if self.is_sqlite:
            sa.event.listen(self.engine, "connect", sqlite_pragmas)
        self.write_lock: AbstractContextManager[Any] = (
            SqliteWriteLock(sa.engine.make_url(url).database) if self.is_sqlite else nullcontext()
        )

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with self.write_lock, self.engine.begin() as conn:
            yield conn

    def read(self) -> Connection:
        return self.engine.connect()

    def dispose(self) -> None:
        self.engine.dispose()
        if isinstance(self.write_lock, SqliteWriteLock):
            self.write_lock.close()

"""The store's database, opened once: instances, studies, job queue and outbox over one engine.

Each table's code lives in its own module (``instances``, ``studies``, ``jobs``, ``outbox``);
``Index`` only opens the database, migrates it to this release's schema (``medgate.store.
migrations``) and hands the four to callers. Features with tables of their own take
``Index.engine``.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from medgate.store.engine import Database
from medgate.store.instances import InstanceIndex
from medgate.store.jobs import JobQueue
from medgate.store.outbox import Outbox
from medgate.store.studies import StudyIndex


class Index:
    """The index of one database (SQLite file or PostgreSQL), safe to share between threads."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.db = Database(url)
        if create:
            from medgate.store.migrations import upgrade

            upgrade(self.db.engine)
        self.instances = InstanceIndex(self.db)
        self.studies = StudyIndex(self.db)
        self.jobs = JobQueue(self.db)
        self.outbox = Outbox(self.db)

    @property
    def url(self) -> str:
        return self.db.url

    @property
    def engine(self) -> Engine:
        return self.db.engine

    @property
    def is_sqlite(self) -> bool:
        return self.db.is_sqlite

    def close(self) -> None:
        self.instances.close()
        self.db.dispose()

"""Schema migrations (Alembic) for the index, job queue and outbox.

``upgrade(engine)`` brings any database — SQLite or PostgreSQL, empty or holding data from an
older medgate — to the schema of this release, so an upgrade keeps every stored row. Revisions
live in ``versions/``; each writes its DDL with Alembic operations, one code path for both
databases. Independent features may add revisions that branch from the same parent (several
heads); ``upgrade`` applies them all.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

HERE = Path(__file__).parent


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    return config


def head_revisions() -> frozenset[str]:
    """This release's heads: features may branch from one revision, each a head of its own."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(engine: Engine) -> frozenset[str]:
    with engine.connect() as conn:
        return frozenset(MigrationContext.configure(conn).get_current_heads())


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Migrate the database behind ``engine`` to ``revision`` (default: every head)."""
    if revision == "heads" and current_revisions(engine) == head_revisions():
        return
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)

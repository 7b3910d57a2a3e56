"""Schema migrations (Alembic) for every table of the store.

``upgrade(engine)`` brings any database — SQLite or PostgreSQL, empty or holding data from an
older medgate — to the schema of this release, so an upgrade keeps every stored row. Revisions
live in ``versions/`` as one line (0001, 0002, 0003, …); each writes its DDL with Alembic
operations, one code path for both databases. A feature developed beside another rebases its
revision onto the newest before it lands, so a release has one head.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).parent

# Development builds after the 0002 release made revision 0003's tables as three sibling
# revisions of 0002; together they made exactly what 0003 makes, so a database holding all
# three is at 0003.
BRANCHES_OF_0003 = frozenset({"0003_deliveries", "0003_review", "0003_referrals"})


class MigrationError(RuntimeError):
    """The database is at revisions this release cannot upgrade from; nothing was changed."""


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    return config


def head_revisions() -> frozenset[str]:
    """This release's head (a set, as Alembic reports it)."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(engine: Engine) -> frozenset[str]:
    with engine.connect() as conn:
        return _current(conn)


def _current(conn: Connection) -> frozenset[str]:
    return frozenset(MigrationContext.configure(conn).get_current_heads())


def _adopt_branches_of_0003(config: Config, conn: Connection) -> None:
    """Re-stamp a development database at the three 0003 branches as 0003 (same tables)."""
    current = _current(conn)
    branches = current & BRANCHES_OF_0003
    if not branches:
        return
    if current != BRANCHES_OF_0003:
        raise MigrationError(
            f"the database is at revisions {', '.join(sorted(current))}, part of a development"
            " build's revision 0003; open it once with the medgate build that made it (that"
            " upgrades it to all of them), then with this release"
        )
    command.stamp(config, "0003", purge=True)


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Migrate the database behind ``engine`` to ``revision`` (default: this release's head)."""
    if revision == "heads" and current_revisions(engine) == head_revisions():
        return
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        _adopt_branches_of_0003(config, conn)
        command.upgrade(config, revision)

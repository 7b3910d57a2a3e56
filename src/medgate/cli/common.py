"""Pieces every ``medgate`` sub-command shares: the ``--config`` option and friendly errors."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from medgate.core.config import ConfigError, Settings, load_settings
from medgate.core.logs import configure_logging, set_hash_key

console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML config file (default: $MEDGATE_CONFIG, else built-in defaults). "
        "Environment variables MEDGATE_<SECTION>__<KEY> override it.",
        envvar="MEDGATE_CONFIG",
        show_envvar=False,
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one red line and exit: users get a reason, not a traceback."""
    # escaped: a message may quote brackets (a path with a line number, a list) that rich
    # would otherwise take for markup and fail on
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_or_exit(config: Path | None) -> Settings:
    """Load the config, set the PHI hash key and logging, or exit with a one-line error."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        fail(str(exc))
    set_hash_key(settings.audit.hash_key)
    configure_logging()
    return settings


class StopSignal:
    """SIGINT or SIGTERM, once caught: ``wait()`` blocks until one has arrived (or returns at
    once if it already has) and returns its number."""

    def __init__(self) -> None:
        self._caught = threading.Event()
        self.signum = 0

    def catch(self, signum: int, _frame: object) -> None:
        self.signum = signum
        self._caught.set()

    def wait(self) -> int:
        while not self._caught.wait(1.0):  # a timeout lets the main thread run the handler
            pass
        return self.signum


@contextmanager
def catching_stop_signals() -> Iterator[StopSignal]:
    """Catch SIGINT and SIGTERM while the block runs, so that a long-running command stops
    cleanly; the previous handlers come back afterwards."""
    stop = StopSignal()
    previous = {s: signal.signal(s, stop.catch) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

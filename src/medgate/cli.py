"""The ``medgate`` command. Each package registers its own sub-commands (``commands.py``)."""

from __future__ import annotations

import typer

from medgate import __version__
from medgate.cli_common import ConfigOption, settings_or_exit

app = typer.Typer(
    name="medgate",
    help="medgate: AI diagnosis gateway. Receives studies from a PACS, runs imaging AI on Ray "
    "Serve, writes DICOM SR/SEG back, and serves decision support to primary-care doctors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@app.command()
def version() -> None:
    """Print medgate's version."""
    typer.echo(__version__)


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective configuration (defaults + file + environment) as TOML."""
    from medgate.config import settings_to_toml

    settings = settings_or_exit(config)
    typer.echo(settings_to_toml(settings))


def _register_subcommands() -> None:
    from medgate import trust_commands
    from medgate.dicom import commands as dicom_commands
    from medgate.models import commands as models_commands
    from medgate.serving import commands as serving_commands
    from medgate.training import commands as training_commands

    for module in (
        dicom_commands,
        serving_commands,
        models_commands,
        training_commands,
        trust_commands,
    ):
        module.register(app)


_register_subcommands()

if __name__ == "__main__":
    app()

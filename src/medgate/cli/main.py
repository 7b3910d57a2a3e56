"""The ``medgate`` command. Each package registers its own sub-commands (``commands.py``)."""

from __future__ import annotations

import typer

from medgate import __version__
from medgate.cli.common import ConfigOption, settings_or_exit

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
    """Print the effective configuration (defaults + file + environment) as TOML, with every
    secret (tokens, keys, passwords, the password of a database URL) redacted."""
    from medgate.core.redaction import redacted_toml

    settings = settings_or_exit(config)
    typer.echo(redacted_toml(settings))


def _register_subcommands() -> None:
    from medgate.cli import dicom as dicom_commands
    from medgate.cli import export_bundle as export_bundle_commands
    from medgate.cli import models as models_commands
    from medgate.cli import serve as serving_commands
    from medgate.cli import training as training_commands
    from medgate.cli import trust as trust_commands

    for module in (
        dicom_commands,
        serving_commands,
        models_commands,
        training_commands,
        export_bundle_commands,  # after training: its export-bundle also takes --onnx
        trust_commands,
    ):
        module.register(app)


_register_subcommands()

if __name__ == "__main__":
    app()

"""``medgate serve`` (the gateway) and ``medgate demo`` (the whole chain on a local Orthanc)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from medgate.cli.common import (
    ConfigOption,
    catching_stop_signals,
    console,
    fail,
    settings_or_exit,
)

RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Join this Ray cluster (e.g. 10.0.0.5:6379) instead of starting a local Ray. "
        "Default: $RAY_ADDRESS, else serving.ray_address, else a local Ray.",
        envvar="RAY_ADDRESS",
        show_envvar=False,
    ),
]


def serve_command(config: ConfigOption = None, ray_address: RayAddressOption = None) -> None:
    """Run the gateway: Ray (local or joined), the HTTP API and models on Ray Serve, the DICOM
    receiver and sender, and the worker. Stops cleanly on Ctrl-C / SIGTERM."""
    from medgate.cli.gateway import Gateway
    from medgate.core.serve_checks import anonymous_api_warning, serve_refusals

    settings = settings_or_exit(config)
    refusals = serve_refusals(settings)
    if refusals:
        fail("medgate serve will not start: " + "; and ".join(refusals))
    warning = anonymous_api_warning(settings)
    if warning:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    gateway = Gateway(settings, ray_address)
    try:
        gateway.start()
    except Exception as exc:
        fail(f"could not start medgate: {type(exc).__name__}: {exc}", code=1)
    served = ", ".join(sorted(gateway.client.names())) if gateway.client else "none"
    console.print(
        f"medgate ready: HTTP {gateway.api_url}  DICOM {settings.dicom.ae_title}@"
        f"{settings.dicom.host}:{gateway.dicom.port if gateway.dicom else settings.dicom.port}  "
        f"models: {served}  "
        f"ray: {gateway.ray_address or 'local'}",
        highlight=False,
    )
    for problem in gateway.problems:
        console.print(f"[yellow]bundle skipped:[/] {problem}", highlight=False)
    with catching_stop_signals() as stop:
        signum = stop.wait()
    console.print(f"received {signal.Signals(signum).name}, stopping ...", highlight=False)
    gateway.stop()
    console.print("medgate stopped", highlight=False)


def demo_command(
    config: ConfigOption = None,
    studies: Annotated[int, typer.Option(help="Number of synthetic chest radiographs.")] = 4,
    keep: Annotated[
        Path | None,
        typer.Option(help="Keep the demo's storage and Orthanc data in this folder."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for all results.")] = 240.0,
) -> None:
    """Run the whole chain on this machine: Orthanc as the regional PACS, medgate, synthetic
    studies with findings; prints findings, priority, guidance and the Orthanc link per study."""
    import logging

    from medgate.cli.demo import DemoError, run_demo

    settings = settings_or_exit(config)
    logging.getLogger().setLevel(logging.WARNING)  # the demo prints its own progress
    try:
        ok = run_demo(settings, studies=studies, keep=keep, timeout=timeout)
    except DemoError as exc:
        fail(str(exc), code=1)
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root ``medgate`` app."""
    app.command("serve")(serve_command)
    app.command("demo")(demo_command)

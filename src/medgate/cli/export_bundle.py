"""``medgate export-bundle``: a training run's bundle, or an ONNX file for a MONAI bundle.

``medgate export-bundle CONFIG [--out DIR]`` re-exports a training run (``cli.training``);
``medgate export-bundle BUNDLE --onnx`` exports a MONAI bundle's network to ONNX, parity
checked. With ``models/model.onnx`` in the bundle, its replicas run the network on ONNX Runtime
(medgate's default backend) inside the bundle's own inferer. The new file changes the bundle's
hash, so the command prints the ``models.trusted`` entry to approve it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from medgate.cli.common import fail


def export_bundle_command(
    target: Annotated[
        Path,
        typer.Argument(
            metavar="CONFIG|BUNDLE", help="a training config, or with --onnx a bundle folder"
        ),
    ],
    onnx: Annotated[
        bool, typer.Option("--onnx", help="write the MONAI bundle's models/model.onnx")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="training run: bundle directory (overrides 'out')")
    ] = None,
    series: Annotated[
        Path | None,
        typer.Option("--series", help="a DICOM series to check the whole run on as well"),
    ] = None,
    tolerance: Annotated[float, typer.Option(help="largest accepted output difference")] = 1e-3,
) -> None:
    """Re-export a training run's best checkpoint as a bundle (CONFIG), or with --onnx export
    a MONAI bundle's network to ONNX if ONNX Runtime gives PyTorch's outputs within
    --tolerance (nothing is written otherwise, exit 1)."""
    from medgate.models.approval import bundle_hash, trust_entry
    from medgate.models.bundle import Bundle, BundleError
    from medgate.models.bundle_check import read_series
    from medgate.models.bundle_export import export_onnx

    if not onnx:
        from medgate.cli.training import export_bundle

        export_bundle(target, out)
        return
    if out is not None:
        fail("--out is for a training run; --onnx writes into the bundle's models/ folder")
    bundle = target
    try:
        loaded = Bundle.load(bundle)
        datasets = read_series(series) if series is not None else None
        report = export_onnx(bundle, datasets, tolerance)
    except (BundleError, OSError) as exc:
        fail(str(exc))
    console = Console()
    console.print(
        f"wrote {report.path} (input {list(report.input_shape)}): max abs difference to "
        f"PyTorch {report.max_abs_difference:.2e}",
        highlight=False,
    )
    if report.series_agreement is not None:
        console.print(f"whole run on the series: agreement {report.series_agreement:.4f}")
    entry = trust_entry(loaded.name, bundle_hash(bundle))
    console.print(f'the bundle changed: approve it again with models.trusted entry "{entry}"')


def register(app: typer.Typer) -> None:
    """Add ``medgate export-bundle`` to the root app."""
    app.command("export-bundle")(export_bundle_command)

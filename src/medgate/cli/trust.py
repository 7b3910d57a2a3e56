"""Trust sub-commands: ``medgate audit verify|trace`` and ``medgate export --deidentify``.

``audit verify`` exits 1 and names the first bad entry when the trail was modified, cut, or had
entries deleted, inserted or reordered; ``audit trace`` shows one study's story from arrival to
confirmed results. Both read the trail, which is itself audited (DICOM 110101 Audit Log Used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from medgate.cli.common import ConfigOption, fail, settings_or_exit
from medgate.core.config import DEFAULT_HASH_KEY

audit_app = typer.Typer(help="Check and read the hash-chained audit trail.", no_args_is_help=True)
out = Console()


@audit_app.command("verify")
def audit_verify(config: ConfigOption = None) -> None:
    """Check the whole trail; exit 1 naming the first modified, missing or misplaced entry."""
    from medgate.trust.audit import open_audit

    settings = settings_or_exit(config)
    log = open_audit(settings)
    result = log.verify()
    if not result.ok:
        where = f"line {result.first_bad_line}: " if result.first_bad_line else ""
        typer.echo(f"FAILED after {result.entries} good entries: {where}{result.reason}", err=True)
        raise typer.Exit(1)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"OK: {result.entries} entries, last hash {result.last_hash}")
    log.record("audit-log-used", actor="medgate audit verify", details={"entries": result.entries})


@audit_app.command("trace")
def audit_trace(
    study: Annotated[str | None, typer.Option("--study", help="StudyInstanceUID to follow")] = None,
    patient: Annotated[
        str | None,
        typer.Option("--patient", help="patient ID: every CDS answer and referral about them"),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Show every audit entry about one study (arrival to confirmed results), or with
    ``--patient`` every decision-support answer and referral about one patient."""
    from medgate.trust.audit import open_audit

    settings = settings_or_exit(config)
    if (study is None) == (patient is None):
        fail("give one of --study or --patient")
    if patient is not None:
        from medgate.cli.patient_trace import patient_trace, print_patient_trace

        trace = patient_trace(settings, patient)
        if not trace["answers"] and not trace["referrals"]:
            fail("no decision-support answers or referrals for that patient", code=1)
        print_patient_trace(trace, out)
        open_audit(settings).record(
            "audit-log-used", actor="medgate audit trace", details={"patient": patient}
        )
        return
    assert study is not None
    log = open_audit(settings)
    check = log.verify()
    if not check.ok:
        typer.echo(f"warning: the trail does not verify ({check.reason})", err=True)
    entries = log.trace(study)
    if not entries:
        fail("no audit entries for that study", code=1)
    table = Table(title=f"study {entries[0]['study']}", show_lines=False)
    for column in ("seq", "time", "event", "DICOM code", "outcome", "actor", "details"):
        table.add_column(column, overflow="fold", no_wrap=column in ("seq", "event", "outcome"))
    for entry in entries:
        details = ", ".join(f"{k}={v}" for k, v in (entry.get("details") or {}).items())
        code = entry.get("event_code") or ""
        if code:
            code = f"{code} {entry.get('event_meaning', '')} ({entry.get('action', '')})"
        table.add_row(
            str(entry.get("seq", "")),
            str(entry.get("time", ""))[:23],
            str(entry.get("event", "")),
            code,
            str(entry.get("outcome", "")),
            str(entry.get("actor") or ""),
            details,
        )
    out.print(table)
    log.record("audit-log-used", actor="medgate audit trace", study_uid=study)


def export(
    deidentify: Annotated[
        Path | None,
        typer.Option("--deidentify", help="output folder for de-identified copies"),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="output folder: reviewed studies, de-identified, with the radiologist's labels "
            "(labels.csv, the folder format medgate train reads)",
        ),
    ] = None,
    study: Annotated[
        list[str] | None,
        typer.Option("--study", help="StudyInstanceUID to export (repeat); default: all"),
    ] = None,
    config: ConfigOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")] = False,
) -> None:
    """Export de-identified copies of stored studies (PS3.15 Annex E Basic Profile + options),
    or (--labels) the reviewed studies with the radiologist's labels for training."""
    from medgate.trust.audit import open_audit
    from medgate.trust.export import ExportError, export_deidentified

    if (deidentify is None) == (labels is None):
        fail("give one of --deidentify DIR or --labels DIR")
    settings = settings_or_exit(config)
    if labels is not None:
        from medgate.review.labels import export_labels

        try:
            done = export_labels(settings, labels, audit=open_audit(settings))
        except (ExportError, ValueError) as exc:
            fail(str(exc))
        skipped = ", ".join(f"{v} {k}" for k, v in done.skipped.items()) or "none"
        typer.echo(
            f"exported {done.studies} reviewed studies ({done.images} images) with labels to "
            f"{done.out}; skipped: {skipped}"
        )
        typer.echo(f"labels: {done.labels}")
        return
    assert deidentify is not None
    if settings.deid.key is None and settings.audit.hash_key == DEFAULT_HASH_KEY:
        typer.echo(
            "warning: deid.key and audit.hash_key are the default; set one so UIDs and "
            "pseudonyms cannot be recomputed by others",
            err=True,
        )
    try:
        report = export_deidentified(
            settings, deidentify, study, audit=open_audit(settings), progress=not quiet
        )
    except (ExportError, ValueError) as exc:
        fail(str(exc))
    excluded = ", ".join(f"{v} {k}" for k, v in report.excluded.items()) or "none"
    failed = ", ".join(f"{v} {k}" for k, v in report.failed.items()) or "none"
    typer.echo(
        f"exported {report.exported} instances of {report.studies} studies to {report.out} "
        f"({report.flagged} flagged); excluded: {excluded}; failed: {failed}"
    )
    typer.echo(f"manifest: {report.manifest}")
    if report.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root ``medgate`` app."""
    app.add_typer(audit_app, name="audit")
    app.command("export")(export)

"""Sub-commands of ``medgate`` for the DICOM network side.

``echo``, ``send``, ``find`` and ``pull`` talk to DICOM peers (the configured PACS by default);
``studies`` and ``outbox`` read the index; ``receive`` runs the DICOM service in the foreground.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from medgate.cli.common import ConfigOption, catching_stop_signals, fail, settings_or_exit
from medgate.core.config import Settings
from medgate.dicom.net import Peer, pacs_peer, parse_peer

console = Console()

PeerArgument = Annotated[
    str | None,
    typer.Argument(
        help="peer as AE@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242 (default: the configured PACS)",
        show_default=False,
    ),
]


def _peer(settings: Settings, text: str | None) -> Peer:
    if not text:
        return pacs_peer(settings)
    try:
        return parse_peer(text)
    except ValueError as exc:
        fail(str(exc))


def echo(peer: PeerArgument = None, config: ConfigOption = None) -> None:
    """C-ECHO a DICOM peer (the configured PACS by default): is it there, does it accept us?"""
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    from medgate.dicom.net import associate, association_failure, scu_ae

    settings = settings_or_exit(config)
    target = _peer(settings, peer)
    ae = scu_ae(settings)
    ae.add_requested_context(Verification)
    assoc = associate(ae, settings, target)
    if not assoc.is_established:
        fail(f"C-ECHO {target}: {association_failure(assoc)}", 1)
    status = assoc.send_c_echo()
    assoc.release()
    code = int(getattr(status, "Status", -1)) if status else -1
    if code != 0:
        fail(f"C-ECHO {target}: status {'none' if code < 0 else hex(code)}", 1)
    console.print(f"C-ECHO {target}: [green]success[/]")


def send(
    paths: Annotated[
        list[Path], typer.Argument(help="DICOM files or folders (searched recursively)")
    ],
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="receiver as AE@HOST:PORT (default: medgate's own listener from the config)",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """C-STORE files to a peer over one association, with a progress bar and a status summary.

    Files are sent as they are on disk (no decoding). Exit status 1 if any file failed.
    """
    from medgate.dicom.net import self_peer
    from medgate.dicom.scu import collect_files, store_files

    settings = settings_or_exit(config)
    target = parse_peer(to) if to else self_peer(settings)
    files = collect_files(paths)
    if not files:
        fail("no files found in the given paths")
    from tqdm import tqdm

    with tqdm(total=len(files), unit="file", desc=f"C-STORE to {target.ae_title}") as bar:
        try:
            report = store_files(settings, target, files, progress=lambda: bar.update(1))
        except ConnectionError as exc:
            fail(str(exc), 1)
    table = Table(title=f"C-STORE to {target}")
    table.add_column("status")
    table.add_column("meaning")
    table.add_column("files", justify="right")
    for (code, meaning), count in sorted(report.counts().items()):
        style = "green" if meaning == "Success" else ("yellow" if meaning == "Warning" else "red")
        table.add_row(code, f"[{style}]{meaning}[/]", str(count))
    console.print(table)
    if report.failed:
        raise typer.Exit(1)


def find(
    patient_id: Annotated[str | None, typer.Option(help="PatientID (wildcards * ?)")] = None,
    patient_name: Annotated[str | None, typer.Option(help="PatientName, e.g. 'WANG*'")] = None,
    study_date: Annotated[
        str | None, typer.Option(help="StudyDate or range, e.g. 20240101-20240131")
    ] = None,
    modality: Annotated[str | None, typer.Option(help="a modality in the study, e.g. CT")] = None,
    accession: Annotated[str | None, typer.Option(help="AccessionNumber")] = None,
    study_uid: Annotated[str | None, typer.Option(help="StudyInstanceUID")] = None,
    peer: Annotated[str | None, typer.Option("--peer", help="AE@HOST:PORT")] = None,
    config: ConfigOption = None,
) -> None:
    """C-FIND studies on the PACS (study root) and list them.

    The table shows patient identifiers: it is meant for the operator's screen, not for logs.
    """
    from medgate.cli.dicom_service import open_index
    from medgate.dicom.retriever import RetrieveError, Retriever

    settings = settings_or_exit(config)
    index = open_index(settings)
    retriever = Retriever(settings, index, _audit(settings), peer=_peer(settings, peer))
    try:
        rows = retriever.find(
            PatientID=patient_id or "",
            PatientName=patient_name or "",
            StudyDate=study_date or "",
            ModalitiesInStudy=modality or "",
            AccessionNumber=accession or "",
            StudyInstanceUID=study_uid or "",
        )
    except RetrieveError as exc:
        fail(str(exc), 1)
    table = Table(title=f"{len(rows)} studies on {retriever.peer}")
    for column in (
        "StudyInstanceUID",
        "PatientID",
        "PatientName",
        "StudyDate",
        "Modalities",
        "Description",
        "Instances",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["StudyInstanceUID"] or "",
            row["PatientID"] or "",
            row["PatientName"] or "",
            row["StudyDate"] or "",
            row["ModalitiesInStudy"] or "",
            row["StudyDescription"] or "",
            row["NumberOfStudyRelatedInstances"] or "",
        )
    console.print(table)


def pull(
    study_uid: Annotated[str, typer.Option("--study-uid", help="StudyInstanceUID to fetch")],
    method: Annotated[
        str | None, typer.Option(help="move or get (default: dicom.retrieve_method)")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Fetch a study from the PACS into medgate's store (C-MOVE to medgate, or C-GET).

    With C-MOVE, medgate's receiver must be running (``medgate receive`` or ``medgate serve``);
    with C-GET the instances come over this command's own association.
    """
    from medgate.cli.dicom_service import open_index
    from medgate.dicom.retriever import RetrieveError, Retriever

    settings = settings_or_exit(config)
    if method not in (None, "move", "get"):
        fail("--method must be 'move' or 'get'")
    index = open_index(settings)
    retriever = Retriever(settings, index, _audit(settings))
    try:
        result = retriever.pull(study_uid, method)
    except RetrieveError as exc:
        fail(str(exc), 1)
    console.print(
        f"C-{result.method.upper()} status 0x{result.status:04X}: {result.completed} completed, "
        f"{result.failed} failed, {result.warning} warning"
    )
    if not result.ok:
        raise typer.Exit(1)


def studies(
    status: Annotated[str | None, typer.Option(help="only studies with this status")] = None,
    config: ConfigOption = None,
) -> None:
    """List the studies medgate has received, with their status and instance counts."""
    from medgate.cli.dicom_service import open_index

    settings = settings_or_exit(config)
    rows = open_index(settings).studies.list(status=status)
    table = Table(title=f"{len(rows)} studies")
    for column in ("StudyInstanceUID", "status", "instances", "received", "priority"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.study_instance_uid,
            row.status,
            str(row.instances),
            row.received_at.strftime("%Y-%m-%d %H:%M:%S"),
            row.priority or "",
        )
    console.print(table)


def outbox(
    status: Annotated[str | None, typer.Option(help="pending, sent or dead (default: all)")] = None,
    config: ConfigOption = None,
) -> None:
    """List result objects waiting for, delivered to, or dead-lettered by the PACS."""
    from medgate.cli.dicom_service import open_index

    settings = settings_or_exit(config)
    if status not in (None, "pending", "sent", "dead"):
        fail("--status must be pending, sent or dead")
    rows = open_index(settings).outbox.list(status=status)
    table = Table(title=f"outbox: {len(rows)} objects")
    for column in ("SOPInstanceUID", "kind", "status", "attempts", "next try / sent", "last error"):
        table.add_column(column)
    for row in rows:
        when = row.sent_at if row.status == "sent" else row.next_attempt_at
        table.add_row(
            row.sop_instance_uid,
            row.kind,
            row.status,
            str(row.attempts),
            when.strftime("%Y-%m-%d %H:%M:%S") if when else "",
            (row.last_error or "")[:60],
        )
    console.print(table)


def deliveries(
    status: Annotated[
        str | None, typer.Option(help="pending, delivered or dead-letter (default: all)")
    ] = None,
    study: Annotated[str | None, typer.Option(help="only this Study Instance UID")] = None,
    config: ConfigOption = None,
) -> None:
    """List results queued for, delivered to, or dead-lettered by the sites' own systems (HIS by
    HL7 v2, FHIR server, site PACS); ``medgate outbox`` lists the regional PACS's."""
    from medgate.cli.dicom_service import open_index
    from medgate.store.deliveries import DeliveryStore
    from medgate.store.schema import DELIVERY_STATUSES

    settings = settings_or_exit(config)
    if status not in (None, *DELIVERY_STATUSES):
        fail(f"--status must be one of {', '.join(DELIVERY_STATUSES)}")
    rows = DeliveryStore(open_index(settings).engine).entries(study_uid=study, status=status)
    table = Table(title=f"site deliveries: {len(rows)} messages")
    columns = ("study", "site", "destination", "channel", "result", "status", "attempts")
    for column in (*columns, "next try / delivered", "ack", "last error"):
        table.add_column(column)
    for row in rows:
        when = row["delivered_at"] if row["status"] == "delivered" else row["next_attempt_at"]
        table.add_row(
            *(str(row[key]) for key in ("study_instance_uid", "site", "destination", "channel")),
            str(row["result_status"]),
            str(row["status"]),
            str(row["attempts"]),
            when.strftime("%Y-%m-%d %H:%M:%S") if when else "",
            row["ack_code"] or "",
            (row["last_error"] or "")[:60],
        )
    console.print(table)


def receive(config: ConfigOption = None) -> None:
    """Run the DICOM service alone in the foreground until SIGTERM or Ctrl-C.

    Receiver (C-ECHO/C-STORE SCP), study assembler, outbox sender and, when ``dicom.poll_seconds``
    is set, the PACS poller. ``medgate serve`` runs the same service next to the AI pipeline.
    """
    from medgate.cli.dicom_service import DicomService

    settings = settings_or_exit(config)
    # caught from before the start, so a signal during it still stops the service cleanly
    with catching_stop_signals() as stop:
        try:
            service = DicomService(settings).start()
        except OSError as exc:
            where = f"{settings.dicom.host}:{settings.dicom.port}"
            fail(f"cannot listen on {where}: {exc.strerror}", 1)
        console.print(
            f"medgate receiving as {settings.dicom.ae_title} on "
            f"{settings.dicom.host}:{service.port}",
            highlight=False,
        )
        try:
            stop.wait()
        finally:
            service.stop()
    console.print("stopped")


def _audit(settings: Settings) -> Any:
    from medgate.trust.audit import AuditLog

    return AuditLog(settings.audit_path, settings.audit.hash_key)


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root ``medgate`` app."""
    app.command("echo")(echo)
    app.command("send")(send)
    app.command("find")(find)
    app.command("pull")(pull)
    app.command("studies")(studies)
    app.command("outbox")(outbox)
    app.command("deliveries")(deliveries)
    app.command("receive")(receive)

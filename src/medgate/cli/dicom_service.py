"""The DICOM side of medgate as one unit: receiver, study assembler, outbox sender, poller.

``medgate serve`` composes a ``DicomService`` with Ray Serve and the worker; ``medgate receive``
runs it alone. The receiver listens in ``dicom.receiver_processes`` child processes (default one
per CPU core; ``medgate.dicom.receiver_pool``); everything else runs in this process. Every part
keeps its state in the index, so stopping and starting again (or a crash) resumes where it
stopped.
"""

from __future__ import annotations

import logging

from medgate.core.config import Settings
from medgate.core.serve_checks import open_dicom_warning
from medgate.delivery.pacs import ResultSender
from medgate.dicom.receiver import StorageReceiver
from medgate.dicom.receiver_pool import receiver_process_count
from medgate.dicom.retriever import Retriever
from medgate.store.assembler import StudyAssembler
from medgate.store.db import Index
from medgate.store.files import InstanceStore
from medgate.trust.audit import AuditLog

log = logging.getLogger(__name__)


def open_index(settings: Settings) -> Index:
    """The configured index (creating the storage folder for the default SQLite file)."""
    settings.storage.path.mkdir(parents=True, exist_ok=True)
    return Index(settings.storage.resolved_database_url())


class DicomService:
    """Start and stop the DICOM threads together.

    ``index`` and ``audit`` default to the configured ones; pass them to share one instance with
    the rest of the process.
    """

    def __init__(
        self,
        settings: Settings,
        index: Index | None = None,
        audit: AuditLog | None = None,
        *,
        send_results: bool = True,
    ) -> None:
        self.settings = settings
        self._own_index = index is None
        self.index = index or open_index(settings)
        self.audit = audit or AuditLog(settings.audit_path, settings.audit.hash_key)
        self.store = InstanceStore(settings, self.index)
        self.receiver = StorageReceiver(settings, self.index, self.audit, self.store)
        self.assembler = StudyAssembler(
            self.index, settings.dicom.study_idle_seconds, audit=self.audit
        )
        self.sender = ResultSender(settings, self.index, self.audit) if send_results else None
        self.retriever = Retriever(settings, self.index, self.audit, self.receiver)
        self.running = False

    @property
    def port(self) -> int:
        """The port the receiver listens on (useful with ``dicom.port = 0``)."""
        return self.receiver.port

    def start(self) -> DicomService:
        if self.running:
            return self
        self.store.recover()  # before the receiver writes: partial files, rows without files
        open_door = open_dicom_warning(self.settings)
        if open_door:
            log.warning("%s", open_door)
        self.receiver.start()
        self.assembler.start()
        if self.sender is not None:
            self.sender.start()
        self.retriever.start_polling()
        self.running = True
        self.audit.record(
            "application-start",
            actor=self.settings.dicom.ae_title,
            details={
                "component": "dicom",
                "port": self.port,
                "receiver_processes": receiver_process_count(self.settings),
            },
        )
        return self

    def stop(self) -> None:
        if not self.running:
            return
        self.retriever.stop_polling()
        if self.sender is not None:
            self.sender.stop()
        self.assembler.stop()
        self.receiver.stop()
        self.store.close()
        self.running = False
        self.audit.record(
            "application-stop", actor=self.settings.dicom.ae_title, details={"component": "dicom"}
        )
        if self._own_index:
            self.index.close()

    def __enter__(self) -> DicomService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

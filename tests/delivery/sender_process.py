"""The HIS delivery loop alone, as a process a test can kill -9 (``sender_process.py CONFIG``).

It opens the store named by the config, starts ``SiteDelivery`` and runs until killed; "ready" on
stdout says the loop is running.
"""

from __future__ import annotations

import sys
import time

import sqlalchemy as sa

from medgate.core.config import load_settings
from medgate.delivery.site_delivery import SiteDelivery
from medgate.trust.audit import AuditLog


def main() -> None:
    settings = load_settings(sys.argv[1])
    engine = sa.create_engine(settings.storage.resolved_database_url())
    audit = AuditLog(settings.audit_path, settings.audit.hash_key)
    SiteDelivery(settings, engine, audit).start()
    print("ready", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()

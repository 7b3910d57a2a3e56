"""The Debian-packaged peers the tests run (DCMTK, dicom3tools, PixelMed, Java): found in the
system folders, and a missing one fails the test with the command that installs it."""

from __future__ import annotations

import shutil

import pytest

SYSTEM_TOOL_PATH = "/usr/bin:/usr/sbin:/bin:/usr/local/bin"


def require_tool(name: str) -> str:
    """Path of a Debian-packaged peer (storescu, dciodvfy ...); `make test` installs them.

    Looked up in the system folders only: pynetdicom installs its own `storescu`, `echoscu` ...
    into the virtualenv, and the tests mean DCMTK's.
    """
    path = shutil.which(name, path=SYSTEM_TOOL_PATH)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make test` (scripts/install.sh installs it)")
    return path

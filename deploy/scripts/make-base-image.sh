#!/usr/bin/env bash
# Make a Debian bookworm base image with Python 3.11 without any container registry:
# debootstrap (minbase + python3, python3-venv, ca-certificates) -> tarball -> `docker import`.
#
#   deploy/scripts/make-base-image.sh [TAG] [CACHE_DIR]
#
# TAG defaults to medgate-base:bookworm. The tarball is kept in CACHE_DIR (default
# ~/.cache/medgate-deploy), so a second run only imports it. Needs root (debootstrap), a Debian
# mirror (MIRROR, default http://deb.debian.org/debian) and a running docker daemon.
set -euo pipefail
tag="${1:-medgate-base:bookworm}"
cache="${2:-${MEDGATE_DEPLOY_CACHE:-$HOME/.cache/medgate-deploy}}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
tarball="$cache/bookworm-minbase-py311.tar"
mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || { echo "debootstrap missing: apt-get install debootstrap" >&2; exit 3; }
  rootfs="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 4; }
  # Smaller and reproducible: no apt lists or caches, no documentation.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
  tar -C "$rootfs" --numeric-owner -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi
docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  "$tarball" "$tag" >/dev/null
echo "$tag"

#!/usr/bin/env bash
# Makes a local Debian bookworm base image without any registry: debootstrap's minbase
# variant (apt, dpkg, bash, coreutils; no systemd, no docs) into a temporary directory,
# trimmed the way the official debian:bookworm-slim image is, then `docker import`.
# Usage: scripts/images/base.sh [TAG]   (default nereid-base:bookworm)
# Idempotent: when the tag exists already it does nothing. Needs root (debootstrap
# creates device nodes and chroots) and the debootstrap package.
# DEBIAN_MIRROR overrides the mirror; the default is the one this project's machines
# use in their own apt sources.
set -euo pipefail
TAG=${1:-nereid-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG exists"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  echo "debootstrap is missing: apt-get install -y debootstrap" >&2
  exit 1
fi
SUDO=$([[ $(id -u) == 0 ]] || echo sudo)

ROOT=$(mktemp -d /tmp/nereid-base.XXXXXX)
# The tree holds root-owned device nodes: removing it needs the same privileges.
trap '$SUDO rm -rf "$ROOT"' EXIT

start=$SECONDS
# minbase is the smallest variant that still has apt, which the Dockerfiles need to add
# their few packages (ca-certificates, curl, prometheus).
$SUDO debootstrap --variant=minbase --components=main bookworm "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || {
  tail -20 "$ROOT.log" >&2
  rm -f "$ROOT.log"
  exit 1
}
rm -f "$ROOT.log"

# What debian:bookworm-slim does to stay small, so images built FROM this one stay small
# too: dpkg never unpacks docs, man pages or translations, and apt keeps no .deb files.
$SUDO tee "$ROOT/etc/dpkg/dpkg.cfg.d/docker-slim" >/dev/null <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
CFG
# rm -f cannot fail on a missing file, so the hooks need no error guard.
$SUDO tee "$ROOT/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
$SUDO tee "$ROOT/etc/apt/apt.conf.d/docker-no-recommends" >/dev/null <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
CFG
# Point releases and security fixes, as in the official image.
$SUDO tee "$ROOT/etc/apt/sources.list" >/dev/null <<LIST
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
LIST
$SUDO find "$ROOT/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
$SUDO find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete
$SUDO rm -rf "$ROOT"/usr/share/{man,info,groff,lintian,linda}/* "$ROOT"/usr/share/locale/* \
  "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/lib/apt/lists/* \
  "$ROOT"/var/log/* "$ROOT"/tmp/* "$ROOT"/root/.bash_history
# Docker supplies these per container; the host's copies do not belong in an image.
$SUDO truncate -s 0 "$ROOT/etc/resolv.conf" "$ROOT/etc/hostname"

$SUDO tar --numeric-owner --xattrs -C "$ROOT" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["bash"]' \
  --message "debootstrap --variant=minbase bookworm $MIRROR" - "$TAG" >/dev/null
echo "base image $TAG built in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$TAG" | numfmt --to=iec))"

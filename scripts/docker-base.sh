#!/usr/bin/env bash
# Builds a local base image from a Debian root filesystem, for machines that cannot pull the
# official python / eclipse-temurin images: debootstrap (minbase) of Debian bookworm with the
# language runtime added by apt, then `docker import`. The nanofaas runtime images are built
# FROM it (see deploy/README.md).
#
# Usage: scripts/docker-base.sh python|java [--refresh]
#   python   nanofaas/base-python:bookworm   (python3, i.e. Python 3.11)
#   java     nanofaas/base-java:bookworm     (openjdk-17-jre-headless)
#   --refresh  rebuild even if an image built from the same recipe exists
#
# The image carries the label dev.nanofaas.inputs (a hash of this recipe); an image with the same
# label is reused, so the slow part runs once per machine. Downloaded packages are kept in
# $NANOFAAS_DOCKER_CACHE/debs (default ~/.cache/nanofaas/docker) for the next build.
#
# The Debian mirror is DEBIAN_MIRROR, else the first bookworm source of this machine's apt
# configuration. Needs root (debootstrap chroots) and installs debootstrap with apt-get if missing.
# Prints the image name on stdout; progress goes to stderr.
#
# Exit codes: 0 ok, 1 a step failed, 2 bad usage.
set -euo pipefail

say() { printf 'docker-base: %s\n' "$*" >&2; }
die() { printf 'docker-base: error: %s\n' "$*" >&2; exit 1; }

flavor=${1:-}
refresh=0
[[ ${2:-} == --refresh ]] && refresh=1
case "$flavor" in
  python) packages=python3 ;;
  java) packages=openjdk-17-jre-headless ;;
  -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: scripts/docker-base.sh python|java [--refresh]" >&2; exit 2 ;;
esac
suite=bookworm
image="nanofaas/base-$flavor:$suite"

command -v docker >/dev/null 2>&1 || die "the docker command is not installed"
docker version >/dev/null 2>&1 || die "the container engine does not answer (is it running?)"

# The recipe: this script, the suite and the packages. Same recipe, same image.
inputs=$( { cat "$0"; echo "$suite $packages"; } | sha256sum | cut -c1-16)
current=$(docker image inspect -f '{{index .Config.Labels "dev.nanofaas.inputs"}}' "$image" 2>/dev/null || true)
if [[ $refresh == 0 && "$current" == "$inputs" ]]; then
  say "$image is up to date"
  echo "$image"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die "building $image needs root (debootstrap); run as root or pull the official base instead"
if ! command -v debootstrap >/dev/null 2>&1; then
  say "installing debootstrap with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2 \
    || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2; } \
    || die "cannot install debootstrap"
fi

# The mirror: DEBIAN_MIRROR, else the first source of this machine's apt configuration that
# serves the suite (deb822 .sources files, then the one-line format).
mirror=${DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    mirror=$(awk -v suite="$suite" '
      /^[[:space:]]*$/ { if (uri != "" && ok) { print uri; exit } uri=""; ok=0; next }
      /^URIs:/ { uri=$2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok=1 }
      END { if (uri != "" && ok) print uri }' "$f" | head -n1)
    [[ -n $mirror ]] && break
  done
fi
if [[ -z $mirror && -f /etc/apt/sources.list ]]; then
  mirror=$(awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2; exit }' /etc/apt/sources.list)
fi
[[ -n $mirror ]] || die "no Debian $suite mirror found in the apt configuration; set DEBIAN_MIRROR"

cache=${NANOFAAS_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nanofaas/docker}
mkdir -p "$cache/debs"
work=$(mktemp -d "${TMPDIR:-/tmp}/nanofaas-base.XXXXXX")
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
rootfs=$work/rootfs

say "debootstrap $suite (minbase + $packages) from $mirror; this takes a few minutes once"
started=$SECONDS
if ! debootstrap --variant=minbase --include="$packages" --cache-dir="$cache/debs" \
    "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
  tail -n 30 "$work/debootstrap.log" >&2
  die "debootstrap failed (full log above)"
fi

# Slim it down: package caches and lists, documentation, the host's resolver settings.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/var/log/* "$rootfs"/tmp/* 2>/dev/null || true
: >"$rootfs/etc/resolv.conf"
: >"$rootfs/etc/hostname"

say "importing $image"
tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "LABEL dev.nanofaas.inputs=$inputs" \
  --change "LABEL dev.nanofaas.base=debian-$suite-$flavor" \
  --change 'CMD ["/bin/bash"]' \
  - "$image" >/dev/null
say "built $image in $((SECONDS - started)) s ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
echo "$image"

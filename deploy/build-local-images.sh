#!/usr/bin/env bash
# Build the production stack's images on a machine that reaches no container registry, from
# Debian packages alone, and point the stack's image variables at them.
#
#   deploy/build-local-images.sh [--env-file FILE] [--ai-standins] [--rebuild-base]
#
# Builds (each only when missing or when its recipe changed; podman's layer cache does the rest):
#   localhost/gpuconfig-base:trixie     Debian trixie + python3 (mmdebstrap + podman import),
#                                       standing in for python:3.13-slim (also trixie)
#   localhost/gpuconfig-postgres:17     postgresql-17, honours the official image's variables
#   localhost/gpuconfig-redis:8         redis-server 8.0
#   localhost/gpuconfig-nginx:1.26      nginx 1.26, the stack's reverse proxy
#   localhost/gpu-config:latest         the app, from ./Containerfile on that base
#   localhost/gpuconfig-ai-standin      (--ai-standins) busybox stand-ins for the AI services
# and writes POSTGRES_IMAGE, REDIS_IMAGE, PROXY_IMAGE, GPUCONFIG_IMAGE (and AI_*_IMAGE) into FILE
# (default: .env), replacing earlier values of those keys and keeping every other line.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/deploy/local-images"

ENV_FILE="$ROOT/.env"
AI_STANDINS=0
REBUILD_BASE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --env-file) ENV_FILE="$2"; shift 2 ;;
    --ai-standins) AI_STANDINS=1; shift ;;
    --rebuild-base) REBUILD_BASE=1; shift ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

BASE_IMAGE=localhost/gpuconfig-base:trixie
POSTGRES_IMAGE=localhost/gpuconfig-postgres:17
REDIS_IMAGE=localhost/gpuconfig-redis:8
PROXY_IMAGE=localhost/gpuconfig-nginx:1.26
APP_IMAGE=localhost/gpu-config:latest
AI_IMAGE=localhost/gpuconfig-ai-standin:latest

log() { echo "== $*" >&2; }

if [ "$REBUILD_BASE" = 1 ] || ! podman image exists "$BASE_IMAGE"; then
  if ! command -v mmdebstrap >/dev/null; then
    log "installing mmdebstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null; }
  fi
  log "building $BASE_IMAGE from Debian packages (about a minute)"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # No man pages, docs or locales, and apt caches emptied after each install, as the
  # official slim images do: derived images stay small.
  mmdebstrap --quiet --variant=minbase \
    --include=python3,python3-venv,ca-certificates \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='printf "%s\n" "DPkg::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true\"; };" "APT::Update::Post-Invoke { \"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true\"; };" "Dir::Cache::pkgcache \"\";" "Dir::Cache::srcpkgcache \"\";" > "$1/etc/apt/apt.conf.d/docker-clean"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/*' \
    trixie "$work/rootfs.tar" \
    "deb http://deb.debian.org/debian trixie main" \
    "deb http://deb.debian.org/debian-security trixie-security main"
  podman import --change 'CMD ["/bin/bash"]' "$work/rootfs.tar" "$BASE_IMAGE" >/dev/null
fi

build() {  # build IMAGE CONTEXT CONTAINERFILE [extra podman build args]
  local image="$1" context="$2" file="$3"
  shift 3
  log "building $image"
  podman build --quiet --layers -t "$image" -f "$file" --build-arg "BASE_IMAGE=$BASE_IMAGE" "$@" "$context" >/dev/null
}

build "$POSTGRES_IMAGE" "$HERE" "$HERE/postgres.Containerfile"
build "$REDIS_IMAGE" "$HERE" "$HERE/redis.Containerfile"
build "$PROXY_IMAGE" "$HERE" "$HERE/nginx.Containerfile"

# pip inside the build reaches PyPI through whatever proxy this host uses; give it the host's
# CA bundle (apt uses plain http and needs nothing).
ca_args=()
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  ca_args=(-v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt)
fi
build "$APP_IMAGE" "$ROOT" "$ROOT/Containerfile" "${ca_args[@]}"

if [ "$AI_STANDINS" = 1 ]; then
  ctx="$(mktemp -d)"
  cp /bin/busybox "$ctx/busybox"
  cp "$HERE"/ai-standin-serve.sh "$HERE"/ai-standin-curl.sh "$ctx/"
  build "$AI_IMAGE" "$ctx" "$HERE/ai-standin.Containerfile"
  rm -rf "$ctx"
fi

set_var() {  # set_var KEY VALUE: replace KEY's line in ENV_FILE, or append it
  local key="$1" value="$2" tmp
  touch "$ENV_FILE"
  tmp="$(mktemp "$ENV_FILE.XXXXXX")"
  grep -v "^${key}=" "$ENV_FILE" > "$tmp" || true
  echo "${key}=${value}" >> "$tmp"
  # Keep the file's owner, group and mode: the guide has GPU Config's containers read it
  # through the podman socket's group.
  chmod --reference="$ENV_FILE" "$tmp"
  chown --reference="$ENV_FILE" "$tmp" 2>/dev/null || true
  mv "$tmp" "$ENV_FILE"
}
set_var POSTGRES_IMAGE "$POSTGRES_IMAGE"
set_var REDIS_IMAGE "$REDIS_IMAGE"
set_var PROXY_IMAGE "$PROXY_IMAGE"
set_var GPUCONFIG_IMAGE "$APP_IMAGE"
if [ "$AI_STANDINS" = 1 ]; then
  for var in AI_LLM_IMAGE AI_YOLO26_IMAGE AI_FLORENCE_IMAGE AI_CLIP_IMAGE AI_ENRICHMENT_IMAGE; do
    set_var "$var" "$AI_IMAGE"
  done
fi
log "images ready; image variables written to $ENV_FILE"

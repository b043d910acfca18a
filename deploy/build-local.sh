#!/usr/bin/env bash
# Builds the CPU image from deploy/Dockerfile.cpu (`make image`), with whatever engine this machine has.
#   deploy/build-local.sh [TAG]            # TAG defaults to echoseg:cpu
# - podman (preferred when installed): the base image is PYTHON_IMAGE when it is present or can be
#   pulled; where no registry is reachable, a Debian bookworm base made here with debootstrap
#   (python3 + venv, tagged localhost/echoseg-base:bookworm, made once and reused). pip's local
#   sources on this host (`pip config list`: find-links, extra-index-url, cert) are mounted into the
#   build and passed as build args, so the pinned CPU torch wheel comes from the host's wheel folder
#   when it is there instead of download.pytorch.org. podman settings: deploy/podman/containers.conf.
# - docker: a plain `docker build` with the Dockerfile's defaults (an ordinary machine).
# Prints the build time and the image size. Layers are cached: a rebuild with unchanged sources is fast.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${1:-echoseg:cpu}"
PYTHON_IMAGE="${PYTHON_IMAGE:-python:3.11-slim-bookworm}"
LOCAL_BASE="localhost/echoseg-base:bookworm"
TORCH_VERSION="$(sed -n 's/^TORCH_CPU_PIN := torch==//p' Makefile)"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}"

log() { echo "build-local: $*" >&2; }

# One value of pip's configuration (`pip config list` prints key='value'), empty when unset.
pip_config() {
    python3 -m pip config list 2>/dev/null | sed -n "s/^[a-z:]*\.$1='\(.*\)'$/\1/p" | head -n 1
}

make_debian_base() {
    command -v debootstrap >/dev/null || { log "debootstrap is missing (deploy/ci-setup.sh installs it)"; exit 1; }
    local root
    root="$(mktemp -d /tmp/echoseg-rootfs.XXXXXX)"
    log "no $PYTHON_IMAGE here: making $LOCAL_BASE with debootstrap (Debian bookworm, python3)"
    debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3 \
        bookworm "$root" "$DEBIAN_MIRROR" >"$root.log" 2>&1 || { tail -n 20 "$root.log" >&2; exit 1; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
    tar -C "$root" -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >/dev/null
    rm -rf "$root" "$root.log"
}

pick_base() {
    if podman image exists "$PYTHON_IMAGE"; then
        echo "$PYTHON_IMAGE"
    elif timeout 60 podman pull -q "$PYTHON_IMAGE" >/dev/null 2>&1; then
        echo "$PYTHON_IMAGE"
    else
        podman image exists "$LOCAL_BASE" || make_debian_base
        echo "$LOCAL_BASE"
    fi
}

build_podman() {
    local base args=() links extra cert src
    base="$(pick_base)"
    args+=(--build-arg "PYTHON_IMAGE=$base" --build-arg "TORCH_VERSION=$TORCH_VERSION")
    links="$(pip_config find-links)"
    extra="$(pip_config extra-index-url)"
    cert="$(pip_config cert)"
    # Local folders and file:// indexes are mounted at the same path, read-only.
    for src in $links $extra; do
        src="${src#file://}"
        if [ -d "$src" ]; then
            case "$src" in */simple) src="$(dirname "$src")" ;; esac  # index pages link ../../files
            args+=(--volume "$src:$src:ro")
        fi
    done
    [ -n "$links" ] && args+=(--build-arg "PIP_FIND_LINKS=$links")
    [ -n "$extra" ] && args+=(--build-arg "PIP_EXTRA_INDEX_URL=$extra")
    if [ -n "$cert" ] && [ -f "$cert" ]; then
        args+=(--volume "$cert:/etc/ssl/host-ca.crt:ro" --build-arg "PIP_CERT=/etc/ssl/host-ca.crt")
    fi
    # The pinned CPU wheel in a local folder: take it from there (through PIP_FIND_LINKS) rather
    # than from download.pytorch.org; PyPI then serves only its pure-Python dependencies.
    for src in $links; do
        if compgen -G "${src#file://}/torch-${TORCH_VERSION}+cpu-*.whl" >/dev/null; then
            log "torch $TORCH_VERSION (CPU build) from $src"
            args+=(--build-arg "TORCH_INDEX_URL=https://pypi.org/simple")
            break
        fi
    done
    log "podman build -f deploy/Dockerfile.cpu -t $TAG (base $base)"
    # The docker format keeps the Dockerfile's HEALTHCHECK (OCI images have no health check).
    podman build --format docker --network host --layers -f deploy/Dockerfile.cpu -t "$TAG" "${args[@]}" .
}

start=$(date +%s)
if command -v podman >/dev/null 2>&1; then
    build_podman
    size=$(podman image inspect --format '{{.Size}}' "$TAG")
elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    docker build -f deploy/Dockerfile.cpu -t "$TAG" .
    size=$(docker image inspect --format '{{.Size}}' "$TAG")
else
    log "neither podman nor a running docker: deploy/ci-setup.sh installs podman"
    exit 1
fi
log "built $TAG in $(($(date +%s) - start)) s; image size $((size / 1000000)) MB"

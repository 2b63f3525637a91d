#!/usr/bin/env bash
# Headless Chromium and its chromedriver from Debian's packages, for the dashboard page's
# browser test (tests/cluster/test_observability_cli.py, driven by selenium from the dev extra).
# Installs them as root when missing; otherwise says what to do and leaves the test to skip.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "browser install: chromium and chromedriver already there ($(/usr/bin/chromium --version 2>/dev/null || true))"
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null; then
  echo "browser install: skipped (needs root and apt-get): run 'apt-get install chromium chromium-driver'" \
       "to run the dashboard's browser test; without them it is skipped"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
echo "browser install: done ($(/usr/bin/chromium --version 2>/dev/null || true))"

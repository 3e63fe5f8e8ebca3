#!/usr/bin/env bash
# Headless Chromium for the browser test of report.html (tests/integration/test_report_browser.py).
#   scripts/chromium.sh install   apt-get install the Debian package `chromium` (root), unless present
#   scripts/chromium.sh path      print the binary's path (exit 1 when missing)
set -euo pipefail

find_chromium() {
  command -v chromium || command -v chromium-browser || true
}

case "${1:-}" in
  install)
    if [ -n "$(find_chromium)" ]; then
      echo "chromium: $(find_chromium) ($("$(find_chromium)" --version 2>/dev/null || echo '?'))"
      exit 0
    fi
    if [ "$(id -u)" != 0 ]; then
      echo "chromium.sh: installing the Debian package chromium needs root (apt-get)" >&2
      exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
    echo "chromium: $(find_chromium) ($("$(find_chromium)" --version 2>/dev/null || echo '?'))"
    ;;
  path)
    p="$(find_chromium)"
    [ -n "$p" ] || { echo "chromium.sh: chromium is not installed (scripts/chromium.sh install)" >&2; exit 1; }
    echo "$p"
    ;;
  *)
    echo "usage: scripts/chromium.sh install|path" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# Installs what tests/integration/api/test_collector_browser.py needs: Debian's chromium, node and npm
# (apt, only when missing), and the pinned @segment/analytics-next in tests/browser (npm ci, only when
# the lock file changed since the last install). Run by scripts/test.sh; the demo does not need it.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[setup-browser]\033[0m %s\n' "$*" >&2; }

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { say "error: ${missing[*]} missing and I am not root; run: apt-get install ${missing[*]}"; exit 1; }
    SUDO=sudo
  fi
  say "installing ${missing[*]} from Debian"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The stamp lives in node_modules, so deleting node_modules also forces a fresh install.
stamp=tests/browser/node_modules/.omniseg-installed
want=$(sha256sum tests/browser/package-lock.json | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing @segment/analytics-next (tests/browser, npm ci)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" > "$stamp"
fi

#!/usr/bin/env bash
# Make sure Debian's Chromium is there for the browser tests (tests/test_webapp.py): Playwright
# drives it; its own browser download cannot work offline. Installs the package with apt-get
# when it is missing and we run as root; otherwise stops and says what to install.
set -euo pipefail
CHROMIUM=${CUSTOMER360_CHROMIUM:-/usr/bin/chromium}
if [[ -x $CHROMIUM ]]; then
  exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium for the browser tests (apt-get install chromium)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  [[ -x $CHROMIUM ]] && exit 0
fi
echo "error: no Chromium at $CHROMIUM for the browser tests. Install the Debian package" >&2
echo "  'chromium' (sudo apt-get install chromium), or point CUSTOMER360_CHROMIUM at a" >&2
echo "  Chromium binary, then rerun make test." >&2
exit 1

#!/usr/bin/env bash
# Installs aiosmtpd (PyPI, a pure-Python asyncio SMTP server) for voltool-notify's mail tests
# into a virtualenv of its own at ${XDG_CACHE_HOME:-~/.cache}/voltool-test/notify-venv
# (no --break-system-packages, nothing in the system's site-packages), reusing it when it is
# already there. Prints the venv's python on stdout (everything else goes to stderr):
#
#   export VOLTOOL_TEST_AIOSMTPD_PYTHON=$(deploy/test-env/notify/setup.sh)
#   cargo test -p voltool-notify
#
# The tests find that python through VOLTOOL_TEST_AIOSMTPD_PYTHON or at the venv's path; they
# start the server themselves (notify/tests/smtp_server.py) on a free port of 127.0.0.1.
set -euo pipefail
die() { echo "setup.sh: $*" >&2; exit 1; }
version=1.4.6
venv=${XDG_CACHE_HOME:-$HOME/.cache}/voltool-test/notify-venv
py=$venv/bin/python

if ! "$py" -c "import aiosmtpd, sys; sys.exit(aiosmtpd.__version__ != '$version')" 2>/dev/null; then
  command -v python3 >/dev/null || die "python3 is needed (apt-get install python3 python3-venv)"
  echo "setup.sh: installing aiosmtpd $version into $venv" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  log=$(mktemp)
  python3 -m venv "$venv" >"$log" 2>&1 \
    || { tail -5 "$log" >&2; die "python3 -m venv failed (Debian: apt-get install python3-venv)"; }
  "$py" -m pip install --quiet --disable-pip-version-check "aiosmtpd==$version" >>"$log" 2>&1 \
    || { tail -20 "$log" >&2; rm -rf "$venv"; die "pip install aiosmtpd==$version failed"; }
  rm -f "$log"
fi
echo "$py"

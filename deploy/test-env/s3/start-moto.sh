#!/usr/bin/env bash
# Starts moto's S3 server (moto[server] from PyPI, an in-memory emulation of AWS S3 written
# from AWS's own API models) on 127.0.0.1:18015 as the second S3 implementation of the test
# suites, beside s3s-fs (start-s3.sh). Logs and the pid file go to DIR. Installs moto the
# first time into a virtualenv of its own under ${XDG_CACHE_HOME:-~/.cache}/voltool-test/
# (no --break-system-packages, nothing in the system's or pyenv's site-packages). Prints
# `export` lines for the suites on stdout (everything else goes to stderr); fails if the
# server does not come up.
#
#   eval "$(deploy/test-env/s3/start-moto.sh /tmp/voltool-test-moto)"
#   kill "$(cat "$VOLTOOL_TEST_MOTO_PIDFILE")"
#
# moto keeps everything in memory and checks no signature (any credentials are accepted); the
# suites create a bucket per test and remove it again. Open multipart uploads are found with
# ListMultipartUploads / ListParts, which moto implements.
set -euo pipefail
die() { echo "start-moto.sh: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: start-moto.sh DIR"
mkdir -p "$1" || die "cannot create $1"
dir=$(cd "$1" && pwd)
port=18015
version=5.2.6
venv=${XDG_CACHE_HOME:-$HOME/.cache}/voltool-test/moto-$version

if [ ! -x "$venv/bin/moto_server" ]; then
  command -v python3 >/dev/null || die "python3 is needed to install moto (apt-get install python3 python3-venv)"
  echo "start-moto.sh: installing moto[server] $version into $venv (pip, about a minute)" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv" >"$dir/install.log" 2>&1 \
    || { tail -5 "$dir/install.log" >&2; die "python3 -m venv failed (Debian: apt-get install python3-venv; log: $dir/install.log)"; }
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$version" \
    >>"$dir/install.log" 2>&1 \
    || { tail -20 "$dir/install.log" >&2; rm -rf "$venv"; die "pip install moto[server]==$version failed (log: $dir/install.log)"; }
  [ -x "$venv/bin/moto_server" ] || die "pip did not install $venv/bin/moto_server"
fi

# Stop an instance this script started before in the same DIR (only while it is still
# moto_server: a stale pid may belong to another process by now).
if [ -f "$dir/moto.pid" ]; then
  old=$(cat "$dir/moto.pid")
  if [ "$(cat "/proc/$old/comm" 2>/dev/null)" = moto_server ]; then
    kill "$old" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
  fi
fi
rm -f "$dir/moto.pid"
# Another server on the port would answer the readiness probe below with other state.
if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
  die "127.0.0.1:$port is already in use by another process (ss -ltnp 'sport = :$port'); stop it first"
fi

"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" </dev/null >"$dir/moto.log" 2>&1 &
pid=$!
echo "$pid" > "$dir/moto.pid"
# Python takes a few seconds to import moto; ListBuckets answering means S3 is served.
probe="import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=5).read()"
for _ in $(seq 1 300); do
  kill -0 "$pid" 2>/dev/null || { tail -5 "$dir/moto.log" >&2; rm -f "$dir/moto.pid"; die "moto_server exited (log: $dir/moto.log)"; }
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && "$venv/bin/python" -c "$probe" 2>/dev/null; then
    echo "start-moto.sh: moto_server $version pid $pid on 127.0.0.1:$port (log $dir/moto.log)" >&2
    cat <<EOF
export VOLTOOL_TEST_MOTO_ENDPOINT=http://127.0.0.1:$port
export VOLTOOL_TEST_MOTO_PIDFILE=$dir/moto.pid
EOF
    exit 0
  fi
  sleep 0.1
done
kill "$pid" 2>/dev/null || true
rm -f "$dir/moto.pid"
tail -5 "$dir/moto.log" >&2 || true
die "moto_server did not answer on 127.0.0.1:$port within 30 s (log: $dir/moto.log)"

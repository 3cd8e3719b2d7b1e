#!/usr/bin/env bash
# Starts s3s-fs (a small S3 server that stores objects as plain files and checks SigV4
# signatures) on 127.0.0.1:18014 for the test suites: data dir DIR/data, bucket voltool-test,
# access key voltool-test / secret $S3_SECRET (default voltool-test-secret). Installs s3s-fs
# with cargo if it is missing. Prints `export` lines for the suites on stdout (everything else
# goes to stderr); fails if the server does not come up.
#
#   eval "$(deploy/test-env/s3/start-s3.sh /tmp/voltool-test-s3)"
#   kill "$(cat "$VOLTOOL_TEST_S3_PIDFILE")"
#
# s3s-fs keeps an open multipart upload as DIR/data/.upload-ID.json plus its parts
# DIR/data/.upload_id-ID.part-N; it does not implement ListMultipartUploads (NotImplemented).
set -euo pipefail
die() { echo "start-s3.sh: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: start-s3.sh DIR"
mkdir -p "$1" || die "cannot create $1"
dir=$(cd "$1" && pwd)
port=18014
bucket=voltool-test
access=voltool-test
secret=${S3_SECRET:-voltool-test-secret}
version=0.14.1

s3s=$(command -v s3s-fs || true)
if [ -z "$s3s" ] && [ -x "$HOME/.cargo/bin/s3s-fs" ]; then s3s=$HOME/.cargo/bin/s3s-fs; fi
if [ -z "$s3s" ]; then
  command -v cargo >/dev/null || die "s3s-fs is not installed and cargo is not available to install it"
  echo "start-s3.sh: installing s3s-fs $version (cargo install, a few minutes)" >&2
  cargo install s3s-fs --version "$version" --locked --features binary >"$dir/install.log" 2>&1 \
    || { tail -20 "$dir/install.log" >&2; die "cargo install s3s-fs failed (log: $dir/install.log)"; }
  s3s=$HOME/.cargo/bin/s3s-fs
  [ -x "$s3s" ] || die "cargo install did not produce $s3s"
fi

# Stop an instance this script started before in the same DIR.
if [ -f "$dir/s3s.pid" ] && kill -0 "$(cat "$dir/s3s.pid")" 2>/dev/null; then
  kill "$(cat "$dir/s3s.pid")" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$(cat "$dir/s3s.pid")" 2>/dev/null || break; sleep 0.1; done
fi
rm -f "$dir/s3s.pid"
# Another server on the port would answer the readiness probe below with other data and keys.
if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
  die "127.0.0.1:$port is already in use by another process (ss -ltnp 'sport = :$port'); stop it first"
fi

# A bucket is a directory of the data dir.
mkdir -p "$dir/data/$bucket"
"$s3s" --host 127.0.0.1 --port "$port" --access-key "$access" --secret-key "$secret" "$dir/data" \
  </dev/null >"$dir/s3s.log" 2>&1 &
pid=$!
echo "$pid" > "$dir/s3s.pid"
for _ in $(seq 1 100); do
  kill -0 "$pid" 2>/dev/null || { tail -5 "$dir/s3s.log" >&2; die "s3s-fs exited (log: $dir/s3s.log)"; }
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    # Any HTTP answer means it serves requests (an anonymous request gets 403).
    if command -v curl >/dev/null; then
      curl -s -o /dev/null -m 5 "http://127.0.0.1:$port/$bucket" || { sleep 0.1; continue; }
    fi
    echo "start-s3.sh: s3s-fs $("$s3s" --version 2>/dev/null | awk '{print $2}') pid $pid on 127.0.0.1:$port, data $dir/data" >&2
    cat <<EOF
export VOLTOOL_TEST_S3_ENDPOINT=http://127.0.0.1:$port
export VOLTOOL_TEST_S3_BUCKET=$bucket
export VOLTOOL_TEST_S3_DATA=$dir/data
export VOLTOOL_TEST_S3_PIDFILE=$dir/s3s.pid
export AWS_ACCESS_KEY_ID=$access
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=us-east-1
EOF
    exit 0
  fi
  sleep 0.1
done
kill "$pid" 2>/dev/null || true
rm -f "$dir/s3s.pid"
tail -5 "$dir/s3s.log" >&2 || true
die "s3s-fs did not listen on 127.0.0.1:$port (log: $dir/s3s.log)"

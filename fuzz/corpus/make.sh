#!/usr/bin/env bash
# Writes the seed corpora (fuzz/corpus/<target>/): a few small, valid inputs per target, so
# the fuzzer starts from real structure (tar headers, pax records, frames, JSON) rather than
# from nothing. Deterministic; needs GNU tar. Run from anywhere: bash fuzz/corpus/make.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
rm -rf tarparse manifest migrate_frames plugin_request volume_options
mkdir -p tarparse manifest migrate_frames plugin_request volume_options
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# tarparse: ustar, pax (long path, xattrs, mtime with nanoseconds), GNU long names, links.
src=$tmp/src
mkdir -p "$src/d/$(printf 'n%.0s' {1..120})"
printf 'hello\n' >"$src/d/f"
ln -s f "$src/d/l"
ln "$src/d/f" "$src/d/h"
mkfifo "$src/d/p"
: >"$src/d/$(printf 'n%.0s' {1..120})/$(printf 'm%.0s' {1..100})"
tarc() { tar -C "$src" --owner=0 --group=0 --mtime=@1700000000 --sort=name "$@" -cf - d; }
# Blocking factor 1 and the end-of-archive blocks dropped: the seeds stay a few KiB.
trim() { python3 -c 'import sys; b = sys.stdin.buffer.read(); n = len(b.rstrip(b"\0")); sys.stdout.buffer.write(b[:(n + 511) // 512 * 512])'; }
tarc --format=gnu -b1 | trim >tarparse/gnu-longname.tar
tarc --format=pax -b1 --pax-option=delete=atime,delete=ctime | trim >tarparse/pax.tar
# A pax header with records a restore reads: path, linkpath, size, uid/gid, mtime, xattrs.
pax() { # pax KEY=VALUE...: one extended header + an empty file entry, as bytes
  python3 - "$@" <<'PY'
import sys, tarfile, io
recs = dict(a.split("=", 1) for a in sys.argv[1:])
ti = tarfile.TarInfo("x")
ti.pax_headers = recs
ti.mtime = 1700000000
b = io.BytesIO()
with tarfile.open(fileobj=b, mode="w", format=tarfile.PAX_FORMAT) as t:
    t.addfile(ti, io.BytesIO(b""))
sys.stdout.buffer.write(b.getvalue())
PY
}
pax path=a/b/c SCHILY.xattr.user.k=v SCHILY.xattr.security.capability=x mtime=1700000000.123456789 | trim >tarparse/pax-xattr.tar
pax linkpath=target uid=4294967296 gid=7 size=0 | trim >tarparse/pax-ids.tar

# manifest: a small manifest as the backup engine writes it, and one with every entry kind.
sha=$(printf 'hello\n' | sha256sum | cut -d' ' -f1)
cat >manifest/small.json <<JSON
{"format_version":1,"id":"v-20260101T000000Z-abcdef","volume":"v","options":{"size":"1G"},"created":"2026-01-01T00:00:00Z","tool_version":"0.1.0","archive_size":123,"archive_sha256":"$sha","files":1,"bytes":6,"entries":[{"path":"","kind":"dir","mode":493,"uid":0,"gid":0,"size":0,"mtime":1700000000},{"path":"f","kind":"file","mode":420,"uid":1000,"gid":1000,"size":6,"mtime":1700000000,"mtime_nsec":5,"sha256":"$sha"}]}
JSON
cat >manifest/kinds.json <<JSON
{"format_version":1,"id":"w-20260101T000000Z-000000","volume":"w","options":{},"created":"2026-01-01T00:00:00Z","tool_version":"0.1.0","archive_size":0,"archive_sha256":"","files":0,"bytes":0,"notes":["skipped a socket"],"entries":[{"path":"s","kind":"symlink","mode":511,"uid":0,"gid":0,"size":0,"mtime":-1,"target":"f"},{"path":"h","kind":"hardlink","mode":420,"uid":0,"gid":0,"size":0,"mtime":0,"target":"f"},{"path":"p","kind":"fifo","mode":420,"uid":0,"gid":0,"size":0,"mtime":0}]}
JSON

# migrate_frames: D frames, then the manifest as an M (JSON) or Z (zstd JSON) frame; an E frame.
frame() { # frame TYPE FILE: one frame with FILE as payload
  local n; n=$(stat -c %s "$2")
  printf "$1"; printf "\\x$(printf %02x $((n >> 24 & 255)))\\x$(printf %02x $((n >> 16 & 255)))\\x$(printf %02x $((n >> 8 & 255)))\\x$(printf %02x $((n & 255)))"; cat "$2"
}
head -c 300 tarparse/pax.tar >"$tmp/d1"; printf 'more' >"$tmp/d2"
zstd -q -3 -c manifest/small.json >"$tmp/z"
printf 'sender: disk full' >"$tmp/e"
{ frame D "$tmp/d1"; frame D "$tmp/d2"; frame M manifest/small.json; } >migrate_frames/json.bin
{ frame D "$tmp/d1"; frame Z "$tmp/z"; } >migrate_frames/zstd.bin
{ frame D "$tmp/d2"; frame E "$tmp/e"; } >migrate_frames/error.bin

# plugin_request: what dockerd POSTs.
printf '' >plugin_request/empty
printf '{"Name":"v1"}' >plugin_request/name.json
printf '{"Name":"v1","ID":"abc123"}' >plugin_request/mount.json
printf '{"Name":"v1","Opts":{"size":"1G","uid":"1000","mode":"0750","quota":"auto"}}' >plugin_request/create-local.json
printf '{"Name":"t","Opts":{"type":"tmpfs","o":"size=64m,uid=1000,noexec"}}' >plugin_request/create-tmpfs.json
printf '{"Name":"n","Opts":{"type":"nfs","o":"addr=127.0.0.1,rw,vers=4.1","device":":/export/sub"}}' >plugin_request/create-nfs.json
printf '{"Name":"c","Opts":{"type":"cifs","share":"//host/share","o":"username=bob,password=p4ss,,x,vers=3.0"}}' >plugin_request/create-cifs.json
printf '{"Name":"b","Opts":{"backup-schedule":"@daily","backup-keep":"daily=7,weekly=4","backup-target":"s3://bkt/pfx","backup-verify":"restore"}}' >plugin_request/create-backup.json

# volume_options: text lines, KEY=VALUE options, pw:X an inline password, part:X an o= option.
printf 'size=1G\nuid=1000\nmode=0750\nquota=auto\nfs=xfs\non-remove=retain' >volume_options/local
printf 'type=tmpfs\no=size=64m,uid=1000,noexec,nr_inodes=1k\npw:hunter2' >volume_options/tmpfs
printf 'type=nfs\no=addr=127.0.0.1,rw,vers=4.1\ndevice=:/export/sub\nsubdir=a/b' >volume_options/nfs
printf 'type=cifs\nshare=//host/share\no=username=bob,vers=3.0,port=445\npw:p4ss\npart:a,,b\npart:x=1' >volume_options/cifs
printf 'backup-schedule=0 3 * * *\nbackup-keep=daily=7,weekly=4\nbackup-target=s3://bkt/pfx\nbackup-verify=restore' >volume_options/backup
echo "corpus written: $(du -sh "$here" | cut -f1) in $here"

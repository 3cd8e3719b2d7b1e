#!/usr/bin/env bash
# Build and install voltool as a Docker managed plugin, offline (no image pull).
#
#   deploy/plugin.sh build     # deploy/build/plugin/{config.json,rootfs/} from a release build
#   deploy/plugin.sh install   # docker plugin create + enable (replaces an installed one)
#   deploy/plugin.sh remove    # docker plugin disable -f + rm
#
# Env: PLUGIN_NAME (default voltool:latest), VOLTOOL_BIN (use this binary instead of
# building one), CARGO_TARGET_DIR, and:
#   PLUGIN_OUT        the build dir (default deploy/build/plugin; build empties it first)
#   PLUGIN_STRIP=1    strip the binary's debug info (a debug build is ~400 MB, stripped ~10%)
#   PLUGIN_STATE_DIR  host dir bound at the plugin's /var/lib/voltool (default the same path)
#   PLUGIN_RUN_DIR    host dir bound at the plugin's /run/voltool, where the management API
#                     socket appears (default the same path)
# Other dirs give the installed plugin its own volumes, catalog and API socket, apart from
# the host's voltool: the Docker test suite installs voltool-e2e-PID:latest that way
# (`docker plugin set NAME state.source=DIR api.source=DIR`, config.json makes them settable).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
name=${PLUGIN_NAME:-voltool:latest}
out=${PLUGIN_OUT:-$here/build/plugin}
state_dir=${PLUGIN_STATE_DIR:-/var/lib/voltool}
run_dir=${PLUGIN_RUN_DIR:-/run/voltool}

die() { echo "plugin.sh: $*" >&2; exit 1; }

# Copies a binary and every shared library it loads (as ldd resolves them) into the rootfs.
copy_with_libs() {
  local bin=$1 dest=$2
  install -D -m 0755 "$bin" "$out/rootfs$dest"
  ldd "$bin" 2>/dev/null | grep -oE '/[^ ]+' | while read -r lib; do
    [ -e "$lib" ] || continue
    install -D -m 0755 "$(readlink -f "$lib")" "$out/rootfs$lib"
  done
}

build() {
  local bin=${VOLTOOL_BIN:-}
  if [ -z "$bin" ]; then
    (cd "$top" && cargo build --release --locked -p voltool) || die "cargo build failed"
    bin="${CARGO_TARGET_DIR:-$top/target}/release/voltool"
  fi
  [ -x "$bin" ] || die "no voltool binary at $bin"
  rm -rf "$out"
  mkdir -p "$out/rootfs"/{usr/bin,mnt/volumes,var/lib/voltool,var/run,run/voltool,run/docker/plugins,etc/voltool,tmp,proc,sys,dev}
  chmod 1777 "$out/rootfs/tmp"
  cp "$here/plugin/config.json" "$out/config.json"
  # Growing a mounted ext4 volume needs CAP_SYS_RESOURCE. runc cannot grant a capability
  # outside dockerd's own bounding set (the plugin would fail to enable), so ask for it only
  # where this host has it.
  local bnd
  bnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  if (( (16#$bnd >> 24) & 1 )); then
    sed -i 's/"CAP_MKNOD"\]/"CAP_MKNOD", "CAP_SYS_RESOURCE"]/' "$out/config.json"
  else
    echo "plugin.sh: note: this host withholds CAP_SYS_RESOURCE; ext4 volumes will only grow while unmounted (xfs grows online)"
  fi
  copy_with_libs "$bin" /usr/bin/voltool
  if [ "${PLUGIN_STRIP:-}" = 1 ]; then
    strip --strip-debug "$out/rootfs/usr/bin/voltool" || die "strip $out/rootfs/usr/bin/voltool"
  fi
  # Filesystem tools for image-backed volumes (mkfs, grow, check), under the names voltool
  # calls them by (mke2fs picks ext4 from argv[0]).
  local tool path
  for tool in mkfs.ext4 resize2fs e2fsck mkfs.xfs xfs_growfs; do
    path=$(PATH="$PATH:/usr/sbin:/sbin" command -v "$tool") || die "$tool not found: apt-get install e2fsprogs xfsprogs"
    copy_with_libs "$(readlink -f "$path")" "/usr/sbin/$tool"
  done
  [ -f /etc/mke2fs.conf ] && install -D -m 0644 /etc/mke2fs.conf "$out/rootfs/etc/mke2fs.conf"
  # A shell and basic tools for restore-test check commands (they run in a container whose
  # root is this rootfs): busybox, when the host has the static one.
  if [ -x /bin/busybox ]; then
    install -D -m 0755 /bin/busybox "$out/rootfs/bin/busybox"
    local applet
    for applet in $(/bin/busybox --list); do
      [ -e "$out/rootfs/bin/$applet" ] || ln -s busybox "$out/rootfs/bin/$applet"
    done
  else
    echo "plugin.sh: note: no /bin/busybox (apt-get install busybox-static); restore-test check commands need a shell"
  fi
  # CA certificates for https S3 endpoints.
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$out/rootfs/etc/ssl/certs/ca-certificates.crt"
  else
    echo "plugin.sh: note: no /etc/ssl/certs/ca-certificates.crt (apt-get install ca-certificates); https S3 endpoints will fail"
  fi
  echo "plugin.sh: built $out ($(du -sh "$out/rootfs" | cut -f1) rootfs)"
}

remove() {
  if docker plugin inspect "$name" >/dev/null 2>&1; then
    docker plugin disable -f "$name" >/dev/null 2>&1 || true
    docker plugin rm -f "$name" >/dev/null
    echo "plugin.sh: removed $name"
  fi
}

install_plugin() {
  [ -f "$out/config.json" ] || die "nothing built at $out; run: deploy/plugin.sh build"
  docker info >/dev/null 2>&1 || die "docker engine not reachable"
  # The plugin binds these host dirs; they must exist before enable.
  mkdir -p "$state_dir" "$run_dir"
  [ -e /dev/fuse ] || die "/dev/fuse is missing on this host (modprobe fuse)"
  [ -e /dev/loop-control ] || die "/dev/loop-control is missing on this host (modprobe loop)"
  remove
  docker plugin create "$name" "$out" >/dev/null
  # Its own state and API socket, and the driver name `voltool volume inspect` shows.
  local set=()
  [ "$state_dir" = /var/lib/voltool ] || set+=("state.source=$state_dir")
  [ "$run_dir" = /run/voltool ] || set+=("api.source=$run_dir")
  [ "$name" = voltool:latest ] || set+=("VOLTOOL_DRIVER_NAME=$name")
  if [ ${#set[@]} -gt 0 ]; then docker plugin set "$name" "${set[@]}" >/dev/null; fi
  # S3 credentials for backup targets, from this shell's environment when set (the same as
  # `docker plugin set voltool:latest AWS_ACCESS_KEY_ID=...` by hand).
  local v
  for v in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN; do
    if [ -n "${!v:-}" ]; then docker plugin set "$name" "$v=${!v}" >/dev/null; fi
  done
  docker plugin enable "$name" >/dev/null
  # The daemon inside listens on the host's $run_dir/voltool.sock.
  for _ in $(seq 1 50); do
    [ -S "$run_dir/voltool.sock" ] && break
    sleep 0.1
  done
  [ -S "$run_dir/voltool.sock" ] || die "plugin enabled but its API socket $run_dir/voltool.sock did not appear"
  echo "plugin.sh: installed and enabled $name (state $state_dir, API socket $run_dir/voltool.sock)"
}

case "${1:-}" in
  build) build ;;
  install) install_plugin ;;
  remove) remove ;;
  *) echo "usage: $0 build|install|remove" >&2; exit 2 ;;
esac

#!/bin/sh
# Removes what one process of the Docker suite made for one plugin mode (see harness.rs):
#
#   teardown.sh managed|legacy DIR DRIVER
#
# DIR is the process's own dir (/tmp/voltool-e2e-MODE-PID: the daemon's state, its API
# socket, its log), DRIVER the Docker driver it served (voltool-e2e-PID:latest, the managed
# plugin; voltool-e2e-legacy, the host daemon's socket in /run/docker/plugins).
#
# In order: the containers and volumes of DRIVER (while the daemon still answers Remove), the
# daemon (plugin disabled and removed; host daemon stopped, its plugin socket removed), mounts
# left under DIR, then DIR. If the run failed (DIR/failed), the host daemon's log is kept
# beside DIR as DIR.log. Every step is best effort and the script is idempotent: the harness
# runs it once the test process has ended, and again for leftovers of a run that was killed.
set -u
mode=$1 dir=$2 driver=$3

for v in $(docker volume ls -q --filter "driver=$driver" 2>/dev/null); do
  docker ps -aq --filter "volume=$v" | xargs -r docker rm -f >/dev/null 2>&1
  docker volume rm -f "$v" >/dev/null 2>&1
done

case $mode in
  managed)
    docker plugin disable -f "$driver" >/dev/null 2>&1
    docker plugin rm -f "$driver" >/dev/null 2>&1
    ;;
  legacy)
    pid=$(cat "$dir/pid" 2>/dev/null)
    # Only while that pid is still a voltool: a stale file's pid may belong to anything now.
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = voltool ]; then
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 1 50); do
        [ -e "/proc/$pid" ] || break
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "/run/docker/plugins/$driver.sock"
    ;;
  *)
    echo "teardown.sh: unknown mode $mode" >&2
    exit 2
    ;;
esac

# Mounts left under DIR (a daemon killed with volumes mounted), deepest first.
awk -v d="$dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
  umount -l "$m" 2>/dev/null
done

if [ -e "$dir/failed" ] && [ -f "$dir/daemon.log" ]; then
  mv -f "$dir/daemon.log" "$dir.log"
fi
# --one-file-system: never into a mount that is still there.
rm -rf --one-file-system "$dir"

#!/bin/sh
# /init of the power-cut campaign's guest (busybox ash, PID 1); see powercut.sh. The state
# (ext4 on the persistent virtio disk vda, mounted at /state) holds voltool's state dir, a
# directory backup target and what the checker expects (/state/expect, every file written
# and synced BEFORE the operation it describes):
#   cur.vol1 / alt.vol1   the volume's tree sum now / the one an operation in flight may leave
#   tree.ID               the tree sum a backup was taken of
#   ever                  how many backups were ever complete (the policy keeps last=KEEP)
#   secret.NAME           the value a secret add in flight gives (prev.NAME: the value before;
#                         ok.NAME once it succeeded)
# Each boot: CHECK (what the last cut left), then WORK (random operations) until the host
# kills qemu. Console markers: PC-SETUP-DONE, PC-CHECK <name> PASS|FAIL <why>, PC-WORK,
# PC-OP <op> (started), PC-DONE <op> (ended).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp; mount -t tmpfs run /run
for m in virtio_pci virtio_blk ext4 loop; do timeout -s KILL 30 modprobe "$m" 2>/dev/null; done
for _ in $(seq 1 50); do [ -b /dev/vda ] && break; sleep 0.2; done
PHASE=run SEED=1 KEEP=2 OPS=mutate,backup,restore,secret
for w in $(cat /proc/cmdline); do
  case $w in
    pc.phase=*) PHASE=${w#*=} ;; pc.seed=*) SEED=${w#*=} ;; pc.keep=*) KEEP=${w#*=} ;; pc.ops=*) OPS=${w#*=} ;;
  esac
done
OPS=$(echo "$OPS" | tr , ' '); NOPS=$(echo $OPS | wc -w)
RANDOM=$SEED
S=/state E=/state/expect V=/state/voltool/volumes/vol1/data
API=/run/pc/api.sock
vt() { timeout -s KILL 120 voltool --api-socket "$API" "$@"; }
end() { echo "PC-END $*"; sync; poweroff -f; sleep 5; }
# (PC-OP / PC-DONE lines carry the guest's uptime: an operation's duration)
say() { case "$*" in "OP "* | "DONE "*) echo "PC-$* @$(cut -d' ' -f1 /proc/uptime)" ;; *) echo "PC-$*" ;; esac; }
put() { printf '%s\n' "$2" > "$E/.$1.tmp" && sync "$E/.$1.tmp" && mv "$E/.$1.tmp" "$E/$1" && sync "$E"; }
# tree sum of a directory: every regular file's path and sha256 (plus symlinks and dirs by name)
treesum() { (cd "$1" && { find . -type f -exec sha256sum {} + | sort -k2; find . ! -type f | sort; } | sha256sum | cut -c1-16); }
if [ "$PHASE" = setup ]; then
  /usr/sbin/mke2fs -q -F -t ext4 /dev/vda || end "mkfs failed"
fi
mkdir -p $S && mount -t ext4 /dev/vda $S || end "mount /dev/vda failed"
mkdir -p $E /run/pc
VOLTOOL_LOG=info voltool serve --state-dir $S/voltool --plugin-socket /run/pc/plugin.sock --api-socket $API \
  --mount-root /run/pc/mnt </dev/null >>/tmp/daemon.log 2>&1 &
for _ in $(seq 1 300); do [ -S $API ] && vt volume ls >/dev/null 2>&1 && break; sleep 0.2; done
vt volume ls >/dev/null 2>&1 || { tail -20 /tmp/daemon.log; say "CHECK daemon FAIL the daemon did not start"; end; }
say "CHECK daemon PASS"
# complete backups of vol1 in the catalog, one ID a line
# (JSON without jq: the keys of the flat objects, one a line)
complete_ids() { vt backup ls vol1 --json | tr -d ' \n' | tr '{,' '\n\n' | awk -F'"' '/^"id":/{id=$4} /^"status":/{if($4=="complete")print id}'; }
secret_names() { vt secret ls --json | tr -d ' \n' | tr '{,' '\n\n' | awk -F'"' '/^"name":/{print $4}'; }
# mutate: a new file, written outside the volume, synced, renamed in (the tree is old or new)
mutate() {
  n=f$RANDOM; dd if=/dev/urandom of=$S/stage bs=64k count=$((RANDOM % 16 + 1)) 2>/dev/null; sync $S/stage
  new=$( (cd "$V" && { { find . -type f -exec sha256sum {} +; echo "$(sha256sum < $S/stage | cut -d' ' -f1)  ./$n"; } | sort -k2; { find . ! -type f; } | sort; } | sha256sum | cut -c1-16) )
  put alt.vol1 "$new"; mv $S/stage "$V/$n"; sync "$V"; put cur.vol1 "$new"; rm -f $E/alt.vol1
}

if [ "$PHASE" = setup ]; then
  vt volume create vol1 -o backup-keep=last=$KEEP >/dev/null || end "volume create failed: $(tail -3 /tmp/daemon.log)"
  mkdir -p "$V/sub"; dd if=/dev/urandom of="$V/sub/base" bs=1M count=2 2>/dev/null; sync
  put cur.vol1 "$(treesum "$V")"; put ever 0
  say SETUP-DONE; end setup
fi

# ---- CHECK what the previous cut left
fails=0
chk() { if [ "$2" = PASS ]; then say "CHECK $1 PASS"; else say "CHECK $1 FAIL $3"; fails=$((fails + 1)); fi; }
now=$(treesum "$V"); cur=$(cat $E/cur.vol1); alt=$(cat $E/alt.vol1 2>/dev/null)
if [ "$now" = "$cur" ] || { [ -n "$alt" ] && [ "$now" = "$alt" ]; }; then
  chk volume-tree PASS; put cur.vol1 "$now"; rm -f $E/alt.vol1
else chk volume-tree FAIL "tree $now is neither $cur nor ${alt:-none}"; fi
# a restore the daemon could not finish or undo at start leaves the volume flagged
if grep -q 'could not recover' /tmp/daemon.log; then
  chk restore-recovery FAIL "$(grep 'could not recover' /tmp/daemon.log | tail -1 | cut -c1-200)"
else chk restore-recovery PASS; fi
ok=0 bad=''
for id in $(complete_ids); do
  if vt backup verify "$id" >/tmp/v.out 2>&1; then ok=$((ok + 1)); else bad="$bad $id($(tail -1 /tmp/v.out))"; fi
done
if [ -z "$bad" ]; then chk backups-verify PASS; else chk backups-verify FAIL "$bad"; fi
ever=$(cat $E/ever); need=$KEEP; [ "$ever" -lt "$need" ] && need=$ever
if [ "$ok" -ge "$need" ]; then chk backups-kept PASS; else chk backups-kept FAIL "$ok restorable, policy keeps $need"; fi
say "COUNT restorable=$ok ever=$ever"
sbad=''
for f in $E/secret.*; do
  [ -e "$f" ] || continue
  n=${f#$E/secret.}; want=$(cat "$f"); listed=no
  secret_names | grep -qx "$n" && listed=yes
  if [ $listed = yes ]; then
    got=$(cat $S/voltool/secrets/$n 2>/dev/null)
    [ "$got" = "$want" ] || { [ -e "$E/prev.$n" ] && [ "$got" = "$(cat "$E/prev.$n")" ]; } || sbad="$sbad $n(value)"
  elif [ -e "$E/ok.$n" ]; then sbad="$sbad $n(lost)"; fi
done
for n in $(secret_names); do [ -e "$E/secret.$n" ] || sbad="$sbad $n(unknown)"; done
if [ -z "$sbad" ]; then chk secrets PASS; else chk secrets FAIL "$sbad"; fi
# what the next round's checks start from: the secrets as they are now (the new expectation
# lands before prev.NAME goes, so a cut in between leaves a state the next check accepts)
for f in $E/secret.*; do
  [ -e "$f" ] || continue
  n=${f#$E/secret.}
  if [ -e "$S/voltool/secrets/$n" ]; then put "secret.$n" "$(cat "$S/voltool/secrets/$n")"; else rm -f "$f"; fi
  rm -f "$E/prev.$n"
done
sync $E
[ $fails = 0 ] || tail -30 /tmp/daemon.log
# what the daemon's recovery did (an interrupted run kept or cleaned, a prune or a restore finished)
grep -E 'kept as complete|interrupted prune|marked failed|partial objects of a failed|recovered a restore' /tmp/daemon.log \
  | sed 's/^[^ ]* *[A-Z]* [^ ]* /PC-RECOVERY /' | cut -c1-200
[ "$PHASE" = check ] && end check

# ---- WORK until the host pulls the plug
say WORK
while :; do
  # a restore needs a complete backup: take one first when there is none
  op=$(echo $OPS | cut -d' ' -f$((RANDOM % NOPS + 1)))
  [ "$op" = restore ] && [ -z "$(complete_ids)" ] && op=backup
  case $op in
    mutate) say "OP mutate"; mutate; say "DONE mutate" ;;
    backup) say "OP backup"; sum=$(treesum "$V")
       if id=$(vt backup run vol1 2>/tmp/b.err | tail -1) && [ -n "$id" ]; then put "tree.$id" "$sum"; put ever $(( $(cat $E/ever) + 1 )); fi
       say "DONE backup" ;;
    restore) id=$(complete_ids | sed -n "$((RANDOM % 3 + 1))p"); [ -n "$id" ] && [ -e "$E/tree.$id" ] || continue
       say "OP restore $id"; put alt.vol1 "$(cat "$E/tree.$id")"
       if vt restore vol1 --from "$id" --force >/tmp/r.out 2>&1; then put cur.vol1 "$(cat "$E/tree.$id")"; rm -f $E/alt.vol1; sync $E
       else
         say "OP restore-failed $(tail -1 /tmp/r.out)"; rm -f $E/alt.vol1
         [ "$(treesum "$V")" = "$(cat $E/cur.vol1)" ] || say "CHECK failed-restore-left-volume FAIL $(tail -1 /tmp/r.out)"
       fi
       say "DONE restore" ;;
    secret) n=s$((RANDOM % 4)); val=v$RANDOM$RANDOM; say "OP secret $n"; rm -f "$E/ok.$n" "$E/prev.$n"; sync $E
       [ -e "$E/secret.$n" ] && put "prev.$n" "$(cat "$E/secret.$n")"; put "secret.$n" "$val"
       printf %s "$val" | vt secret add "$n" >/dev/null && put "ok.$n" 1
       say "DONE secret" ;;
  esac
done

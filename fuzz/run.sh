#!/usr/bin/env bash
# Builds the fuzz targets and runs each one for a bounded time; fails on the first crash,
# leak, timeout or out-of-memory (a single allocation or the RSS over 512 MiB).
#
#   bash fuzz/run.sh [SECONDS]          # per target, default 60 (5 targets: ~5 min + build)
#   FUZZ_TARGETS="tarparse manifest" bash fuzz/run.sh 600
#
# Each target starts from its seeds in fuzz/corpus/<target>/ (read only; what it finds goes
# to a scratch corpus). A crashing input is kept in fuzz/artifacts/<target>/ and the command
# to reproduce it is printed. Needs the nightly toolchain, or stable with RUSTC_BOOTSTRAP=1
# (used automatically when no nightly is installed); installs cargo-fuzz when missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
secs=${1:-60}
[[ "$secs" =~ ^[0-9]+$ ]] && [ "$secs" -gt 0 ] || { echo "usage: fuzz/run.sh [SECONDS]" >&2; exit 2; }
targets=${FUZZ_TARGETS:-tarparse manifest migrate_frames plugin_request volume_options}
die() { echo "fuzz: FAILED: $*" >&2; exit 1; }

export PATH="$HOME/.cargo/bin:$PATH"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  cargo=(cargo +nightly)
else
  # cargo-fuzz passes -Z flags (sanitizers); stable accepts them with RUSTC_BOOTSTRAP=1.
  export RUSTC_BOOTSTRAP=1
  cargo=(cargo)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked || die "cargo install cargo-fuzz"
fi

# Longest input per target: headers claim sizes, so small inputs reach every limit.
max_len() {
  case $1 in
    tarparse | manifest | migrate_frames) echo 65536 ;;
    *) echo 4096 ;;
  esac
}

echo "fuzz: building (${cargo[*]} fuzz build, release with debug assertions and ASan)"
"${cargo[@]}" fuzz build || die "cargo fuzz build"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
summary=()
for t in $targets; do
  [ -d "corpus/$t" ] || die "no seed corpus fuzz/corpus/$t"
  mkdir -p "$scratch/$t" "artifacts/$t"
  log="$scratch/$t.log"
  echo "fuzz: $t for ${secs}s"
  set +e
  "${cargo[@]}" fuzz run "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=512 -malloc_limit_mb=512 -timeout=10 \
    -max_len="$(max_len "$t")" -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -oE '^Done [0-9]+ runs' "$log" | awk '{print $2}' | tail -1 || true)
  if [ "$rc" != 0 ] || [ -z "$runs" ]; then
    # What failed (the panic or the sanitizer's report), then how the run ended.
    grep -m1 -A12 -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)' "$log" >&2 || true
    echo "..." >&2
    tail -25 "$log" >&2
    art=$(grep -oE "artifacts/$t/[^ ]+" "$log" | tail -1 || true)
    [ -n "$art" ] && echo "fuzz: reproduce with: cd fuzz && ${cargo[*]} fuzz run $t $art" >&2
    die "$t (exit status $rc)"
  fi
  summary+=("$t: $runs runs in ${secs}s, no crash")
  echo "fuzz: ${summary[-1]}"
done
echo
printf 'fuzz: %s\n' "${summary[@]}"

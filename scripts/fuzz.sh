#!/usr/bin/env bash
# Fuzzes kvreplay's parsers: scripts/fuzz.sh SECONDS [TARGET...]
#
# Builds the fuzz workspace (fuzz/) and runs every target, or those named, for SECONDS each,
# with debug assertions and overflow checks on and no sanitizer (-a -s none). Each run starts
# from the committed seeds (fuzz/seeds/<target>/ and fuzz/regressions/<target>/) and keeps what
# it finds in fuzz/corpus/<target>/ (git-ignored); crashes land in fuzz/artifacts/<target>/.
# Prints the executions and crashes per target and exits non-zero when a target crashed.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). libFuzzer needs nightly compiler
# flags: with a stable toolchain RUSTC_BOOTSTRAP=1 (set here) allows them.
# FUZZ_JOBS=N runs N processes per target (libFuzzer's fork mode, which goes on past crashes).
# FUZZ_FAST=1 builds without comparison tracing (--no-trace-compares): several times the
# executions per second on the CSV importers, with coarser guidance.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}"
shift
export RUSTC_BOOTSTRAP=1
jobs="${FUZZ_JOBS:-1}"
build=(-a -s none)
[ "${FUZZ_FAST:-0}" = 1 ] && build+=(--no-trace-compares)

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
for t in "${targets[@]}"; do
    [ -f "fuzz_targets/$t.rs" ] || { echo "no fuzz target $t (see fuzz/fuzz_targets/)" >&2; exit 2; }
done

cargo fuzz build "${build[@]}"

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
summary=()
failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    dirs=("corpus/$t")
    for d in "seeds/$t" "regressions/$t"; do
        [ -d "$d" ] && dirs+=("$d")
    done
    before="$(ls "artifacts/$t" | wc -l)"
    args=(-max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=4096)
    if [ "$jobs" -gt 1 ]; then
        args+=(-fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    fi
    echo "== $t: ${secs}s"
    status=0
    cargo fuzz run "${build[@]}" "$t" "${dirs[@]}" -- "${args[@]}" >"$logs/$t.log" 2>&1 || status=$?
    # Executions: the final statistics, else the last "#N" status line (fork mode).
    execs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$logs/$t.log" | tail -1)"
    if [ -z "$execs" ]; then
        execs="$(sed -n 's/^#\([0-9][0-9]*\)[: ].*/\1/p' "$logs/$t.log" | tail -1)"
    fi
    crashes=$(($(ls "artifacts/$t" | wc -l) - before))
    if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        failed=1
        grep -m1 -A3 -E "panicked at|ERROR: libFuzzer" "$logs/$t.log" || tail -20 "$logs/$t.log"
        ls -t "artifacts/$t" | head -5 | sed "s|^|  fuzz/artifacts/$t/|"
    fi
    summary+=("$(printf '%-20s %14s executions  %3d new artifacts  exit %d' "$t" "${execs:-?}" "$crashes" "$status")")
done

echo
printf '%s\n' "${summary[@]}"
exit "$failed"

#!/usr/bin/env bash
# Golden comparison: builds a previous revision's binary and this checkout's, runs both on a set
# of traces x configurations, and compares summary.json, requests.parquet and kv_usage.json byte
# for byte (plus a compare, a sweep and a validation). A refactor must leave them identical.
#
#   bash scripts/golden.sh [BASE_REV]      (default: HEAD, i.e. the last commit vs. the work tree)
#   NEW_REV=REV bash scripts/golden.sh BASE  (compare two commits; the work tree may change meanwhile)
#
# Needs ../shared/traces (the Mooncake and Azure traces). Writes under target/golden/.
# Exit status: 0 when every output is identical, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BASE_REV="${1:-HEAD}"
BASE_SHA="$(git rev-parse --verify "$BASE_REV^{commit}")"
SHARED="${KVREPLAY_SHARED:-$ROOT/../shared}"
G="$ROOT/target/golden"
mkdir -p "$G"

# A revision's binary, built once per commit in its own worktree and target folder.
build_rev() { # REV -> path of its binary
    local sha
    sha="$(git rev-parse --verify "$1^{commit}")"
    local bin="$G/bin/kvreplay-$sha"
    if [ ! -x "$bin" ]; then
        local src="$G/src-$sha"
        [ -d "$src" ] || git worktree add --detach "$src" "$sha" >/dev/null
        echo "building $sha" >&2
        (cd "$src" && CARGO_TARGET_DIR="$G/target-base" cargo build --release --locked -q)
        mkdir -p "$G/bin"
        cp "$G/target-base/release/kvreplay" "$bin"
        git worktree remove --force "$src"
    fi
    echo "$bin"
}
BASE_BIN="$(build_rev "$BASE_SHA")"
# The new binary: this checkout's work tree, or commit NEW_REV.
NEW_BIN="$G/bin/kvreplay-new"
if [ -n "${NEW_REV:-}" ]; then
    cp "$(build_rev "$NEW_REV")" "$NEW_BIN"
else
    echo "building this checkout"
    cargo build --release --locked -q
    cp target/release/kvreplay "$NEW_BIN"
fi

# Traces, written by the base binary (the trace layer is compared on its own below).
T="$G/traces"
rm -rf "$T" && mkdir -p "$T"
gen() { "$BASE_BIN" "$@" >/dev/null; }
gen trace import --format mooncake "$SHARED/traces/mooncake_conversation_trace.jsonl" -o "$T/mooncake-conv.jsonl"
gen trace import --format mooncake "$SHARED/traces/mooncake_synthetic_trace.jsonl" -o "$T/mooncake-syn.jsonl"
gen trace import --format azure "$SHARED/traces/AzureLLMInferenceTrace_conv.csv" -o "$T/azure-conv.parquet"
gen trace import --format azure "$SHARED/traces/AzureLLMInferenceTrace_code.csv" -o "$T/azure-code.parquet"
gen trace gen random --num-prompts 2000 --random-input-len 1024 --random-prefix-len 512 \
    --random-output-len 128 --request-rate 20 --seed 1 -o "$T/random-prefix.jsonl"
gen trace gen random --num-prompts 200 --random-input-len 256 --random-output-len 2048 \
    --request-rate 1 --seed 2 -o "$T/decode-heavy.jsonl"
gen trace gen random --num-prompts 3000 --random-input-len 2048 --random-range-ratio 0.5 \
    --random-output-len 64 --request-rate inf --seed 3 -o "$T/burst.jsonl"
gen trace gen long-doc-qa --num-documents 20 --document-length 10000 --repeat-count 2 \
    --repeat-mode tile --seed 4 -o "$T/long-doc-qa.jsonl"
gen trace gen llmperf --max-num-completed-requests 300 --num-concurrent-requests 10 --seed 5 \
    -o "$T/llmperf.jsonl"
gen trace gen multi-turn --config "$SHARED/traces/vllm_generate_multi_turn.json" \
    --num-clients 8 --seed 6 -o "$T/multi-turn.jsonl"

# Configurations: name, then `--set` keys.
CONFIGS=(
    "none|tier=none"
    "cpu|tier=cpu max_local_cpu_size_gb=20"
    "cpu-disk|tier=disk max_local_cpu_size_gb=2 max_local_disk_size_gb=50"
    "remote-1ms|tier=remote remote=redis rtt_ms=1 max_local_cpu_size_gb=2"
    "remote-50ms|tier=remote remote=lmcache_server rtt_ms=50 local_cpu=false remote_concurrency=8"
    "native|tier=native kv_offloading_size=20"
    "native-small|tier=native kv_offloading_size=2 num_gpu_blocks=20000"
    "squeezed|tier=cpu max_local_cpu_size_gb=4 num_gpu_blocks=2000"
    "async-layerwise|tier=disk max_local_cpu_size_gb=4 max_local_disk_size_gb=20 enable_async_loading=true use_layerwise=true save_unfull_chunk=true"
    "decode-cache|tier=cpu max_local_cpu_size_gb=2 chunk_size=64 save_decode_cache=true block_size=32 qps_scale=2 request_overhead_ms=3"
)

O="$G/out"
rm -rf "$O" && mkdir -p "$O"
fail=0
same=0
printf '%-22s %-16s %s\n' trace config result
for trace in "$T"/*; do
    tn="$(basename "${trace%.*}")"
    for c in "${CONFIGS[@]}"; do
        cn="${c%%|*}"
        args=()
        for kv in ${c#*|}; do args+=(--set "$kv"); done
        # The two binaries run side by side (each is single-threaded).
        for side in base new; do
            bin="$BASE_BIN"; [ "$side" = new ] && bin="$NEW_BIN"
            (timeout 600 "$bin" run --trace "$trace" "${args[@]}" -o "$O/$side/$tn/$cn" \
                >"$O/$side.$tn.$cn.log" 2>&1 || echo "exit $? ($side)" >>"$O/$side.$tn.$cn.log") &
        done
        wait
        diffs=()
        for f in summary.json requests.parquet kv_usage.json; do
            if ! cmp -s "$O/base/$tn/$cn/$f" "$O/new/$tn/$cn/$f"; then diffs+=("$f"); fi
        done
        if [ ${#diffs[@]} -eq 0 ] && [ -f "$O/new/$tn/$cn/summary.json" ]; then
            same=$((same + 1))
            printf '%-22s %-16s identical\n' "$tn" "$cn"
        else
            fail=1
            printf '%-22s %-16s DIFFERS: %s\n' "$tn" "$cn" "${diffs[*]:-no output}"
        fi
    done
done

# Whole-command outputs: the default compare, a sweep grid and the shipped studies.
whole() { # name, then the command (without binary); {OUT} is the side's folder. Every file the
    # command writes there is compared (its printed output is not: it may carry wall times).
    local name="$1"; shift
    for side in base new; do
        bin="$BASE_BIN"; [ "$side" = new ] && bin="$NEW_BIN"
        local out="$O/$side/whole-$name"
        mkdir -p "$out"
        local cmd=("${@//\{OUT\}/$out}")
        "$bin" "${cmd[@]}" >"$out/stdout.txt" 2>&1 || echo "exit $?" >>"$out/stdout.txt"
    done
    local diffs
    diffs="$( (diff -rq --exclude=stdout.txt "$O/base/whole-$name" "$O/new/whole-$name" 2>&1 || true) |
        sed "s|$O/||g" | tr '\n' ' ')"
    if [ -z "$diffs" ]; then
        same=$((same + 1))
        printf '%-39s identical\n' "$name"
    else
        fail=1
        printf '%-39s DIFFERS: %s\n' "$name" "$diffs"
    fi
}
whole compare compare -o "{OUT}"
whole sweep sweep --trace "$T/mooncake-syn.jsonl" \
    --set tier=none,cpu,native --set chunk_size=256,1024 --set block_size=16,32 -o "{OUT}"
whole validate validate "$SHARED"/validation/*.json --json "{OUT}/validation.json"

echo "identical: $same; base $BASE_SHA vs this checkout"
[ "$fail" = 0 ] && echo "all outputs identical" || echo "SOME OUTPUTS DIFFER"
exit "$fail"

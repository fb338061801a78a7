#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."

# Calibration tests start a real redis-server on loopback (and compare with redis-benchmark).
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
    echo "installing redis-server (needed by the Redis calibration tests)"
    SUDO=""
    if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q redis-server >/dev/null 2>&1 || {
        $SUDO apt-get update -q >/dev/null
        $SUDO apt-get install -y -q redis-server >/dev/null
    }
fi

# The GPU kernels' compile check needs libnvrtc (no GPU): install NVIDIA's NVRTC wheel into
# target/nvrtc once. Offline or without pip the check prints that it is skipped.
NVRTC_LIB="$PWD/target/nvrtc/nvidia/cuda_nvrtc/lib"
if ! ls "$NVRTC_LIB"/libnvrtc.so* >/dev/null 2>&1; then
    if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
        echo "installing NVRTC into target/nvrtc (for the GPU kernel compile check)"
        python3 -m pip install --quiet --disable-pip-version-check --timeout 20 --retries 1 \
            --target target/nvrtc nvidia-cuda-nvrtc-cu12 >/dev/null 2>&1 ||
            echo "could not install nvidia-cuda-nvrtc-cu12 (offline?): the kernel compile check will be skipped"
    else
        echo "python3/pip not found: the GPU kernel compile check will be skipped"
    fi
fi
export LD_LIBRARY_PATH="$NVRTC_LIB:${LD_LIBRARY_PATH:-}"

# The simulator core builds without the optional parts (GPU kernels, Redis client, live driver,
# plots).
cargo build --no-default-features --locked
cargo test --all-targets --locked

# The Python package (python/): built with maturin into a virtual environment under target/,
# sharing this build's compiled dependencies, then its tests, which compare its results with the
# CLI binary built above.
PYENV="$PWD/target/pyenv"
if [ ! -x "$PYENV/bin/python" ]; then
    echo "creating a Python environment in target/pyenv (maturin, pyarrow, pandas, pytest, tokenizers, jinja2)"
    if ! python3 -m venv "$PYENV" >/dev/null 2>&1; then
        SUDO=""
        if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
        $SUDO apt-get install -y -q python3-venv >/dev/null 2>&1 || {
            $SUDO apt-get update -q >/dev/null
            $SUDO apt-get install -y -q python3-venv >/dev/null
        }
        rm -rf "$PYENV"
        python3 -m venv "$PYENV"
    fi
fi
"$PYENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "maturin>=1.5,<2" "pyarrow>=16" "pandas>=1.5" "pytest>=7" "tokenizers" "jinja2"
VIRTUAL_ENV="$PYENV" PATH="$PYENV/bin:$PATH" \
    "$PYENV/bin/maturin" develop --quiet --manifest-path python/Cargo.toml --locked
KVREPLAY_BIN="$PWD/target/debug/kvreplay" "$PYENV/bin/python" -m pytest -q python/tests

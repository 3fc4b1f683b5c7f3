#!/usr/bin/env bash
# Installs everything elastic needs on Debian 12 / Ubuntu 24.04 and builds it.
# Idempotent: a second run checks, skips what is there, and only rebuilds what changed.
#   tools/setup.sh            # CPU build in build/
#   ELASTIC_CUDA=ON tools/setup.sh   # also CUDA kernels and NCCL (needs the CUDA toolkit)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_DIR=${BUILD_DIR:-build}
TORCH_VERSION=2.11.0
CUDNN_FRONTEND_VERSION=1.32.0
# libtorch_cpu from the PyPI wheel links CUDA's runtime and CUPTI (for its profiler); these two
# small wheels provide them, so no CUDA install is needed for a CPU build.
CUDA_RUNTIME_WHEELS="cuda-toolkit[cudart,cupti]==13.0.2"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

APT_PACKAGES=(build-essential cmake ninja-build ccache pkg-config git python3 python3-venv python3-pip
  libyaml-cpp-dev libspdlog-dev libopenmpi-dev openmpi-bin nlohmann-json3-dev libpcre2-dev
  libutf8proc-dev libgtest-dev libgmock-dev)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages present"
fi

STAMP=.venv/.elastic-torch-$TORCH_VERSION
if [ ! -f "$STAMP" ]; then
  say "creating .venv with torch==$TORCH_VERSION (LibTorch headers and libraries; ~530 MB download)"
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  # --no-deps: only the C++ library is used; the CUDA wheels torch pulls in are GBs the CPU build never loads.
  .venv/bin/pip install -q --no-deps "torch==$TORCH_VERSION"
  .venv/bin/pip install -q --no-deps "$CUDA_RUNTIME_WHEELS" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  touch "$STAMP"
else
  say "torch==$TORCH_VERSION present in .venv"
fi

# cuDNN frontend headers (header-only C++; the wheel's Python module is never loaded): the CUDA
# build's band-causal attention (src/attention/cudnn_band.cpp). Without them CMake builds without it.
CFE_STAMP=.venv/.elastic-cudnn-frontend-$CUDNN_FRONTEND_VERSION
if [ ! -f "$CFE_STAMP" ]; then
  say "installing nvidia-cudnn-frontend==$CUDNN_FRONTEND_VERSION headers into .venv"
  if .venv/bin/pip install -q --no-deps "nvidia-cudnn-frontend==$CUDNN_FRONTEND_VERSION"; then
    touch "$CFE_STAMP"
  else
    say "warning: nvidia-cudnn-frontend not installed: streaming attention stays on FlashAttention-2"
  fi
else
  say "nvidia-cudnn-frontend==$CUDNN_FRONTEND_VERSION present in .venv"
fi

JOBS=${JOBS:-$(nproc)}
# Let ccache hit across checkouts in different directories and through precompiled headers.
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=true \
  CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  say "configuring $BUILD_DIR (CUDA=${ELASTIC_CUDA:-OFF})"
  cmake -S . -B "$BUILD_DIR" -G Ninja -DELASTIC_CUDA="${ELASTIC_CUDA:-OFF}" ${CMAKE_ARGS:-} >/dev/null
fi
say "building ($JOBS jobs; first build takes several minutes, ccache makes later ones fast)"
ninja -C "$BUILD_DIR" -j "$JOBS"
test -x "$BUILD_DIR/elastic"
say "ready: $BUILD_DIR/elastic"

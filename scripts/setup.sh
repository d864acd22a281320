#!/usr/bin/env bash
# Installs what is missing, configures and builds kvshard, and fetches the default model.
# Idempotent: apt runs only when a package is absent; the model is fetched only when its
# checksum does not match. On a machine without network (the GPU machine), Debian packages
# downloaded beforehand into .deps/ are unpacked instead (see docs/gpu-machine.md).
#
# Env: KVS_BUILD_DIR (default build), KVS_SKIP_MODEL=1 to skip the model fetch, KVS_BUILD_TARGETS
# (space-separated) to build only those targets (a short device call).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${KVS_BUILD_DIR:-build}

# Debian packages kvshard builds against (Abseil, GoogleTest, nlohmann-json, PCRE2, Open MPI, Boost.Beast
# for the HTTP server, cpp-httplib for the benchmark client) and tools (clang-format for the format check). Slurm and munge are the
# Slurm test's own (tests/launcher/slurm_test.sh installs them).
PACKAGES=(cmake ninja-build g++ libabsl-dev libgtest-dev nlohmann-json3-dev libpcre2-dev openmpi-bin libopenmpi-dev
          libboost1.81-dev libcpp-httplib-dev libssl-dev zlib1g-dev libbrotli-dev clang-format git)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The model fetch needs pip; any python3 with pip will do (Debian's or another).
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3 python3-pip)

# A missing package whose .deb was carried in .deps/ (the GPU machine has no network) is unpacked
# under /tmp/kvs-deps; the rest come from apt. A machine with network and a .deps/ folder (packed
# there for the GPU machine) thus still installs what .deps/ lacks, such as Open MPI.
PREFIX_ARGS=()
from_apt=()
carried=()
for p in "${missing[@]}"; do
  if ls .deps/"${p}"_*.deb >/dev/null 2>&1; then carried+=("$p"); else from_apt+=("$p"); fi
done
if [ ${#from_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing: ${from_apt[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    # On the GPU machine (no network; .deps/ carried; its cmake and clang-format are not dpkg
    # packages) this fails and the build finds out whether it has what it needs; elsewhere a
    # failed install stops here.
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${from_apt[@]}" >/dev/null; } \
      || { [ ${#carried[@]} -gt 0 ] && echo "[setup] apt could not install ${from_apt[*]}; going on"; } \
      || { echo "[setup] apt could not install ${from_apt[*]}" >&2; exit 1; }
  else
    echo "[setup] missing packages and no apt-get: ${from_apt[*]}" >&2
    exit 1
  fi
fi
if [ ${#carried[@]} -gt 0 ]; then
  echo "[setup] unpacking carried packages from .deps/ (missing here: ${carried[*]})"
  mkdir -p /tmp/kvs-deps
  for f in .deps/*.deb; do dpkg -x "$f" /tmp/kvs-deps; done
  export LD_LIBRARY_PATH=/tmp/kvs-deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  PREFIX_ARGS=(-DCMAKE_PREFIX_PATH=/tmp/kvs-deps/usr)
fi

# nvcc is in the CUDA toolkit but not always on PATH.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi

GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 "${PREFIX_ARGS[@]}" ${KVS_CMAKE_ARGS:-}
fi
cmake --build "$BUILD_DIR" -j "$(nproc)" ${KVS_BUILD_TARGETS:+--target $KVS_BUILD_TARGETS}
# Scripts that run the binaries source this (it carries the library path of unpacked packages).
{
  echo "# written by scripts/setup.sh"
  [ ${#PREFIX_ARGS[@]} -gt 0 ] && echo "export LD_LIBRARY_PATH=/tmp/kvs-deps/usr/lib/x86_64-linux-gnu:\${LD_LIBRARY_PATH:-}"
  true
} > "$BUILD_DIR/env.sh"

if [ "${KVS_SKIP_MODEL:-0}" != "1" ]; then
  bash scripts/fetch_model.sh
fi
echo "[setup] done: $ROOT/$BUILD_DIR/launcher/kvshard"

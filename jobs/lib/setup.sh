#!/usr/bin/env bash
# Installs what mpillama needs (Debian packages) when it is missing, then builds it.
# Sourced by jobs/demo.sh and tests/run.sh. Sets MPILLAMA_ROOT, MPILLAMA_BUILD, MPILLAMA_BIN.
set -euo pipefail
MPILLAMA_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MPILLAMA_BUILD=${MPILLAMA_BUILD:-$MPILLAMA_ROOT/build}
MPILLAMA_PACKAGES=(build-essential cmake pkg-config openmpi-bin libopenmpi-dev libhdf5-openmpi-dev
  libopenblas-dev libhwloc-dev libcjson-dev libpcre2-dev python3 python3-numpy python3-matplotlib hdf5-tools
  clang-14 libclang-rt-14-dev) # clang and libFuzzer: tests/fuzz/run.sh

missing=()
for p in "${MPILLAMA_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cmake -S "$MPILLAMA_ROOT" -B "$MPILLAMA_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$MPILLAMA_BUILD" -j"$(nproc)" >/dev/null
MPILLAMA_BIN=$MPILLAMA_BUILD/mpillama

# Open MPI refuses to run as root, and more ranks than cores, unless told
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=1

#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds, runs ctest.
#   tests/run.sh [ctest args...]     e.g. tests/run.sh -L unit
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../jobs/lib/setup.sh"
cd "$MPILLAMA_BUILD"
ctest --output-on-failure --timeout 900 "$@"

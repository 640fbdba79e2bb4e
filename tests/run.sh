#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds, runs ctest, then lists the skips
# (tests/check_skips.py); with CI=true a skip whose reason is not on tests/skip_allowlist.txt
# fails the run.
#   tests/run.sh [ctest args...]     e.g. tests/run.sh -L unit
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../jobs/lib/setup.sh"
cd "$MPILLAMA_BUILD"
rc=0
ctest --output-on-failure --timeout 900 --output-junit "$MPILLAMA_BUILD/ctest-junit.xml" \
  --test-output-size-passed 8000000 --test-output-size-failed 8000000 "$@" || rc=$?
/usr/bin/python3 "$MPILLAMA_ROOT/tests/check_skips.py" "$MPILLAMA_BUILD/ctest-junit.xml" \
  "$MPILLAMA_ROOT/tests/skip_allowlist.txt" || rc=1
exit $rc

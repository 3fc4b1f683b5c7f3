#!/usr/bin/env bash
# Sets up and builds (tools/setup.sh), then runs every test suite through CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
# Two ranks of the multi-process tests may share a core.
export OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "${JOBS:-$(nproc)}" "$@"

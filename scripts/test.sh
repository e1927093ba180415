#!/usr/bin/env bash
# Sets up (idempotent) and runs the test suite, then its numerical part with another CPU's kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run typecheck
npm test
bash scripts/test-other-cpu.sh
bash scripts/package-test.sh

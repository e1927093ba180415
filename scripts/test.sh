#!/usr/bin/env bash
# Sets up (idempotent) and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run typecheck
npm test
bash scripts/package-test.sh

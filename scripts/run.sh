#!/usr/bin/env bash
# Sets up (idempotent) and runs a reals command: bash scripts/run.sh <command> [flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
exec node bin/reals.js "$@"

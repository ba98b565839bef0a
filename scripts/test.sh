#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs the lab tools when root, checks
# formatting and lints, then runs every test of the workspace. End-to-end tests need
# root; without it (and outside CI) they skip with a message.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
  scripts/install-deps.sh
elif [ "${CI:-}" = "true" ]; then
  echo "test.sh: CI must run as root (end-to-end tests build namespaces)" >&2
  exit 1
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --all-targets

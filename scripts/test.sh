#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs the lab tools when root, checks
# formatting and lints, runs each fuzz target for a few seconds, then runs every test of
# the workspace. End-to-end tests need root; without it (and outside CI) they skip with a
# message.
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

# Fuzz smoke run (issue 22; docs/fuzzing.md has the long run): builds the cargo-fuzz
# targets (nightly, AddressSanitizer; about 3.5 min cold on 2 cores, seconds when built)
# and runs each for a few seconds from its committed seeds. A crash, a hang or a leak
# fails the script and leaves the reproducer under fuzz/artifacts/<target>/. The corpus
# a smoke run grows goes to a temporary directory, so the tree stays as it was.
FUZZ_TARGETS=(pipeline lab dns metadata control_socket bgp)
FUZZ_SECONDS=${FUZZ_SECONDS:-5}
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "test.sh: no nightly toolchain: fuzz smoke run skipped"
elif ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    echo "test.sh: cargo-fuzz is missing (scripts/install-deps.sh installs it)" >&2
    exit 1
  fi
  echo "test.sh: cargo-fuzz is missing (scripts/install-deps.sh): fuzz smoke run skipped"
else
  # Not `cargo fmt --all` here: that would follow the path dependencies into the main crates.
  rustfmt --check --edition 2021 fuzz/src/*.rs fuzz/fuzz_targets/*.rs fuzz/seedgen/src/*.rs
  cargo +nightly fuzz build
  fuzz_tmp=$(mktemp -d)
  trap 'rm -rf "$fuzz_tmp"' EXIT
  for t in "${FUZZ_TARGETS[@]}"; do
    mkdir -p "$fuzz_tmp/$t"
    echo "test.sh: fuzz $t for ${FUZZ_SECONDS}s"
    if ! cargo +nightly fuzz run "$t" "$fuzz_tmp/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 \
      >"$fuzz_tmp/$t.log" 2>&1; then
      grep -m1 -A15 -E 'panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' \
        "$fuzz_tmp/$t.log" >&2 || true
      tail -n 25 "$fuzz_tmp/$t.log" >&2
      echo "test.sh: fuzz target $t failed; reproducer under fuzz/artifacts/$t/" >&2
      exit 1
    fi
    grep -E '^stat::number_of_executed_units' "$fuzz_tmp/$t.log" | sed "s/^/  $t: /"
  done
fi

cargo test --workspace --all-targets


#!/usr/bin/env bash
# The end-to-end performance harness (perf/src/bin/harness.rs): installs the tools, builds
# release binaries, and measures kernel_router, kernel_ct_nat, tun_floor and vpcd's paths
# side by side (iperf3 TCP 1 and 4 streams, UDP 64 B, ping, connections/s) and times
# `vpcd up`; prints one table with ratios to tun_floor and saves it under perf/results/.
# Needs root (through sudo when needed). Extra arguments name the tests to run
# (tcp, udp, ping, cps, up).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo "$root/scripts/install-deps.sh"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin vpcd
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p perf --bin harness
cd "$root"
exec $sudo "$root/target/release/harness" "$root/target/release/vpcd" "$@"

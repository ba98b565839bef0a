#!/usr/bin/env bash
# Runs a lab on this machine: installs the lab tools (iproute2, ping, iperf3, ...), builds
# vpcd in release mode, and runs `vpcd up` as root (through sudo when needed). Arguments
# go to `vpcd up`: a lab file (without one, the built-in default lab) and options such as
# --prefix P, --mtu N, --workers N. Ctrl-C stops the router and removes the lab.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

$sudo "$root/scripts/install-deps.sh"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin vpcd
exec $sudo "$root/target/release/vpcd" up "$@"

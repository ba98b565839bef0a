#!/usr/bin/env bash
# Installs what vpcd's labs and tests need on a fresh Debian/Ubuntu machine: iproute2
# (ip netns), ping, iperf3, tcpdump, traceroute, nftables (perf references), a C++
# compiler (libFuzzer, built by the fuzz targets), Graphviz (`vpcd graph --format svg`),
# BIRD 2 (the customer gateways' BGP daemon),
# and cargo-fuzz when the nightly toolchain is there. Idempotent: installs only what is
# missing, and does nothing when everything is there.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip      || need+=(iproute2)
have ping    || need+=(iputils-ping)
have iperf3  || need+=(iperf3)
have tcpdump || need+=(tcpdump)
have traceroute || need+=(traceroute)
have curl || need+=(curl)
have nft     || need+=(nftables)
have c++     || need+=(g++)
have dot     || need+=(graphviz)
have bird    || need+=(bird2)

if [ ${#need[@]} -eq 0 ]; then
  echo "install-deps: the system packages are installed"
elif [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${need[*]}; run as root (sudo $0) to install them" >&2
  exit 1
else
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Daemons (bird2) must not start in this machine's own namespace: vpcd starts them
  # inside the lab's site namespaces. policy-rc.d forbids service starts during the
  # install (exit 101), unless the machine has one of its own.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
  fi
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ -z "$guard" ] || rm -f "$guard"
fi

# cargo-fuzz runs the fuzz targets (fuzz/, docs/fuzzing.md; scripts/test.sh's smoke run).
# It needs the nightly toolchain, which this script cannot install (rustup's downloads
# are not a package registry): without nightly, the fuzz smoke run is skipped. `cargo
# install` compiles it from crates.io: about 70 s on 2 cores, once per machine.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  if cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "install-deps: cargo-fuzz is installed"
  else
    echo "install-deps: installing cargo-fuzz (about 70 s)"
    cargo install cargo-fuzz --locked --quiet
  fi
else
  echo "install-deps: no nightly toolchain: cargo-fuzz not installed, fuzz smoke runs skip"
fi
echo "install-deps: done"

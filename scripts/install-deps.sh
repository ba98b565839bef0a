#!/usr/bin/env bash
# Installs what vpcd's labs and tests need on a fresh Debian/Ubuntu machine: iproute2
# (ip netns), ping, iperf3, tcpdump, traceroute, nftables (perf references). Idempotent: installs only
# what is missing, and does nothing when everything is there.
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

if [ ${#need[@]} -eq 0 ]; then
  echo "install-deps: everything is installed"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${need[*]}; run as root (sudo $0) to install them" >&2
  exit 1
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "install-deps: done"

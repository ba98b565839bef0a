#!/usr/bin/env bash
# Soak test (not in CI; issue 22): runs the default lab for a long time under mixed,
# churning traffic and live applies, and records vpcd's memory and file descriptors every
# 10 s, to show they stay flat.
#
#   scripts/soak.sh [SECONDS]          (default 1800: 30 minutes; needs root)
#
# Traffic, all between the lab's own namespaces:
#   - a TCP stream web-1 -> app-1 (iperf3, restarted as it ends), and one through the NAT
#     gateway and IGW to inet-1;
#   - UDP churn: a new source port for every datagram, a few thousand a second, so the
#     flow table (--conntrack-max 4096 here) fills, evicts and refuses (TABLE_FULL);
#   - short TCP connections to inet-1 (connect, close), DNS queries, metadata requests,
#     pings over IPv4 and IPv6;
#   - `vpcd apply` every 5 s, alternating between two labs (a rule added and removed);
#   - with `vpcd fault` available, a fault started and stopped every minute.
# Writes perf/results/soak-TIME.tsv (seconds, RSS KiB, fds, threads, flows, generation)
# and prints the first, last, lowest and highest of each column.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
duration="${1:-1800}"
prefix="soak$$-"
if [ "$(id -u)" -ne 0 ]; then
  echo "soak.sh: needs root (it builds network namespaces)" >&2
  exit 1
fi
"$root/scripts/install-deps.sh" >/dev/null
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin vpcd
vpcd="$root/target/release/vpcd"
work="$(mktemp -d)"
out="$root/perf/results/soak-$(date +%s).tsv"
mkdir -p "$root/perf/results"
pids=()

cleanup() {
  # Each job runs in its own process group (setsid): the group goes, with whatever the
  # job started, and nothing else.
  # The traffic first, vpcd (the first job) last.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    p=${pids[i]}
    kill -TERM -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  "$vpcd" down --prefix "$prefix" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Two labs that differ by one SG rule, applied in turn.
cp "$root/configs/default.yaml" "$work/a.yaml"
sed 's/^\(\s*\)- { protocol: icmp, source: 0.0.0.0\/0 }/&\n\1- { protocol: tcp, port_range: 8080, source: 10.0.0.0\/16 }/' \
  "$root/configs/default.yaml" >"$work/b.yaml"
cp "$work/a.yaml" "$work/lab.yaml"

"$vpcd" up --prefix "$prefix" --conntrack-max 4096 "$work/lab.yaml" >"$work/up.log" 2>&1 &
up=$!
pids+=("$up")
for _ in $(seq 100); do grep -q '^ready$' "$work/up.log" && break; sleep 0.2; done
grep -q '^ready$' "$work/up.log" || { cat "$work/up.log"; exit 1; }
# A job in its own process group, and a job run again and again.
job() { setsid "$@" >/dev/null 2>&1 & pids+=("$!"); }
forever() { job bash -c 'while :; do "$@" || sleep 1; done' _ "$@"; }
ns() { echo ip netns exec "$prefix$1"; }

job $(ns app-1) iperf3 -s
job $(ns inet-1) iperf3 -s
job $(ns inet-1) iperf3 -s -p 7000
sleep 0.5
forever $(ns web-1) iperf3 -c 10.0.2.10 -t 60 -b 200M
forever $(ns app-1) iperf3 -c 203.0.113.10 -t 60 -b 100M
forever $(ns web-1) bash -c 'for i in $(seq 2000); do echo x >/dev/udp/10.0.2.10/$((20000 + i % 9000)); done'
forever $(ns app-1) bash -c 'for i in $(seq 200); do exec 3<>/dev/tcp/203.0.113.10/7000 && exec 3>&-; done'
forever $(ns web-1) bash -c 'for i in $(seq 50); do getent hosts ip-10-0-2-10.ec2.internal; done'
forever $(ns app-1) curl -s -m 2 http://169.254.169.254/latest/meta-data/instance-id
forever $(ns web-1) ping -c 20 -i 0.2 10.0.2.10
forever $(ns web-1) ping -6 -c 20 -i 0.2 2001:db8:10:2::10
forever bash -c "cp '$work/b.yaml' '$work/lab.yaml'; '$vpcd' apply --prefix '$prefix' '$work/lab.yaml'; sleep 5; cp '$work/a.yaml' '$work/lab.yaml'; '$vpcd' apply --prefix '$prefix' '$work/lab.yaml'; sleep 5"
if "$vpcd" fault --help >/dev/null 2>&1; then
  forever bash -c "'$vpcd' fault start --prefix '$prefix' aws:ec2:stop-instances app-1 --duration 20s; sleep 60"
fi

printf 'seconds\trss_kib\tfds\tthreads\tflows\tgeneration\n' >"$out"
start=$(date +%s)
while :; do
  now=$(( $(date +%s) - start ))
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$up/status")
  threads=$(awk '/^Threads/ {print $2}' "/proc/$up/status")
  fds=$(ls "/proc/$up/fd" | wc -l)
  status="$("$vpcd" status --prefix "$prefix" 2>/dev/null || true)"
  flows=$(sed -n 's/.*flow table \([0-9]*\) of.*/\1/p' <<<"$status" | head -1)
  gen=$(sed -n 's/.*generation \([0-9]*\).*/\1/p' <<<"$status" | head -1)
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$now" "$rss" "$fds" "$threads" "${flows:--}" "${gen:--}" >>"$out"
  [ "$now" -ge "$duration" ] && break
  sleep 10
done

echo "soak: $duration s, samples in $out"
awk -F'\t' 'NR > 1 {
  for (c = 2; c <= 5; c++) {
    v = $c + 0
    if (NR == 2) { first[c] = v; lo[c] = v; hi[c] = v }
    if (v < lo[c]) lo[c] = v
    if (v > hi[c]) hi[c] = v
    last[c] = v
  }
} END {
  split("rss_kib fds threads flows", name, " ")
  for (c = 2; c <= 5; c++)
    printf "  %-8s first %8d  last %8d  min %8d  max %8d\n", name[c - 1], first[c], last[c], lo[c], hi[c]
}' "$out"
"$vpcd" stats --prefix "$prefix" | head -4

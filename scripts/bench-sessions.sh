#!/usr/bin/env bash
# The sessions issue's goals: agent sessions per second over mutual TLS on
# 127.0.0.1 (handshake, Hello, one batch of 100 records, Ack) against the
# bare rustls mutual-TLS handshake rate measured in the same run, and
# 10,000 idle authenticated connections held with the service's RSS under
# 1 GiB. The service and the bare server run in processes of their own
# (benches/sessions.rs). Prints `RATIO` lines (measured / goal; 1.00 or
# more meets the goal), then one summary table with the machine's facts.
# Arguments go to the bench: scripts/bench-sessions.sh --seconds 20 --threads 4
set -euo pipefail
cd "$(dirname "$0")/.."
# The load generator and the service each hold 10,000 sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo bench --locked --bench sessions --no-run --quiet
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo bench --locked --bench sessions --quiet -- "$@" | tee "$out"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
# The bench ends with its summary table; the machine's facts continue it.
echo "| date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
echo "| commit | $(git rev-parse --short HEAD 2>/dev/null || echo unknown) |"
echo "| cores (nproc) | $(nproc) |"
echo "| CPU | $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1) |"
echo "| memory | $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) |"
echo "| open files (ulimit -n) | $(ulimit -n) |"
echo "| load average before / after | $load_before / $load_after |"

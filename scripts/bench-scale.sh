#!/usr/bin/env bash
# The scale-out path end to end on this machine: agents over mutual TLS ->
# a front-end (the service publishing to NATS JetStream) -> JetStream ->
# writers -> PostgreSQL, everything but the two servers in one process
# (crates/service/examples/bench-scale.rs). Prints the records per second
# stored (from the first batch sent until the stream is drained), the
# agents' acknowledgement latency p50/p99, the CPU time of each part, and a
# `RATIO` line (measured / goal; 1.00 or more meets the goal of 50,000
# records/s).
#
# PRIVTEL_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres) and
# PRIVTEL_NATS_URL (default nats://127.0.0.1:4222) name the servers; the run
# makes a database and a stream of its own and drops them. Arguments go to
# the bench: scripts/bench-scale.sh --agents 64 --seconds 30 --writers 2
set -euo pipefail
cd "$(dirname "$0")/.."
pg=${PRIVTEL_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
nats=${PRIVTEL_NATS_URL:-nats://127.0.0.1:4222}
cargo build --release --locked -p privtel-service --features jetstream,tls --example bench-scale
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
exec "$target/release/examples/bench-scale" --pg "$pg" --nats "$nats" "$@"

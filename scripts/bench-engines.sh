#!/usr/bin/env bash
# The two engines in one run on the same 2 M records: durable ingest
# (batches of 1,000 committed ten at a time, as the service's writer does)
# and a retention sweep removing the 1 M older records, on SQLite and on
# PostgreSQL (a database of its own, made and dropped by the run). Prints
# `RATIO` lines (measured / goal; 1.00 or more meets the goal): PostgreSQL
# ingest >= 100,000 records/s, its sweep >= 20x faster than SQLite's.
#
# PRIVTEL_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres) names
# the server; RECORDS (default 2000000) the number of records.
set -euo pipefail
cd "$(dirname "$0")/.."
url=${PRIVTEL_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
records=${RECORDS:-2000000}
cargo build --release --locked -p privtel-engine-pg --example bench-engines
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
exec "$target/release/examples/bench-engines" --pg "$url" --records "$records"

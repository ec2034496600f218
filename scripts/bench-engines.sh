#!/usr/bin/env bash
# The two engines in one run on the same 2 M records of 100 devices:
# durable ingest (batches of 1,000 committed ten at a time, as the
# service's writer does) and a retention sweep removing the 1 M older
# records once they are at rest, on SQLite and on PostgreSQL (databases of
# their own, made and dropped by the run); PostgreSQL with one writer and
# with several at once. Three rounds; prints each figure's median and
# range, then `RATIO` lines on the medians (measured / goal; 1.00 or more
# meets the goal): PostgreSQL ingest >= 100,000 records/s, its sweep >= 20x
# faster than SQLite's.
#
# PRIVTEL_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres) names
# the server; RECORDS (default 2000000) the number of records, WRITERS
# (default 2) the PostgreSQL writers at once, ROUNDS (default 3) the rounds;
# NAMING=1 makes the records name their person by login and home folder
# too (every day then has its mentions partition).
set -euo pipefail
cd "$(dirname "$0")/.."
url=${PRIVTEL_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
records=${RECORDS:-2000000}
writers=${WRITERS:-2}
rounds=${ROUNDS:-3}
cargo build --release --locked -p privtel-engine-pg --example bench-engines
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
exec "$target/release/examples/bench-engines" --pg "$url" --records "$records" --writers "$writers" --rounds "$rounds" ${NAMING:+--naming}

#!/usr/bin/env bash
# The store issue's goals: spool appends, engine ingest, a sweep of 1 M rows
# out of 2 M, and one person's export, on real SQLite files. Prints `RATIO`
# lines (measured / goal; 1.00 or more meets the goal).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --bench store --quiet

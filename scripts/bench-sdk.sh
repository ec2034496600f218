#!/usr/bin/env bash
# The SDK and the agent loop against the goals of the collectors issue:
#   * one SDK call on the caller's thread (criterion: benches/sdk.rs), goal
#     <= 1 us per recorded event;
#   * heap allocations of a call whose program is off (valgrind's dhat, N = 0
#     against N = 100,000 calls of crates/agent/examples/sdk_calls.rs), goal 0;
#   * the agent's collection loop on an idle machine with 200 extra processes
#     (crates/agent/examples/loop_cost.rs), goals <= 1 % of one core and
#     <= 64 MiB peak RSS.
# Prints RATIO lines (>= 1 meets the goal). Needs valgrind for the second.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench sdk -- --warm-up-time 1 --measurement-time 3 2>&1 | grep -E "^sdk/|time:"
cargo build --release -p privtel-agent --example sdk_calls --example loop_cost
bin=target/release/examples
blocks() { # total heap blocks dhat saw for `sdk_calls MODE N`
  valgrind --tool=dhat --dhat-out-file=/dev/null "$bin/sdk_calls" "$1" "$2" 2>&1 \
    | sed -n 's/.*Total: *[0-9,]* bytes in \([0-9,]*\) blocks.*/\1/p' | tr -d ,
}
for mode in off on; do
  base=$(blocks "$mode" 0)
  many=$(blocks "$mode" 100000)
  echo "ALLOCATIONS $mode: $(( (many - base) / 100000 )) a call ($base blocks with no call, $many with 100,000 calls; integer division)"
done
"$bin/loop_cost" --processes 200 --seconds "${LOOP_SECONDS:-60}" --every 10

#!/usr/bin/env bash
# One agent cycle, measured: peak RSS and CPU time of the release `agent`
# example over a 200,000-line web log and a scan of /usr/bin, uploading to a
# release `cloud` on 127.0.0.1. Prints one `MEASURE name value` line per
# figure. Goal (agent issue): peak RSS <= 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${LINES:-200000}
SCAN=${SCAN:-/usr/bin}
cargo build --release --locked --example agent --example cloud >/dev/null
work=$(mktemp -d)
trap 'kill "${cloud_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$work/web.log" "$LINES" <<'PY'
import sys, datetime
path, n = sys.argv[1], int(sys.argv[2])
start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=2)
with open(path, "w") as f:
    for i in range(n):
        at = (start + datetime.timedelta(milliseconds=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        f.write(f"{at}\tu-{i % 50}\thttps://site{i % 400}.example/page/{i}?q={i}\t203.0.113.{i % 250}\t{i % 3000}\n")
PY
target/release/examples/cloud --listen 127.0.0.1:0 --store "$work/engine.db" \
    --reputation examples/data/reputation.csv --cert-out "$work/ca.pem" >"$work/cloud.out" 2>/dev/null &
cloud_pid=$!
for _ in $(seq 100); do grep -q listening "$work/cloud.out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^listening on //p' "$work/cloud.out")
/usr/bin/time -f '%M %U %S %e' -o "$work/time" target/release/examples/agent --server "$addr" --ca "$work/ca.pem" \
    --customer acme --device dev-measure --policy examples/data/policy.toml --spool "$work/spool.db" \
    --scan "$SCAN" --web-log "$work/web.log" --once >/dev/null 2>"$work/agent.err" \
    || { cat "$work/agent.err" >&2; exit 1; }
read -r rss user sys wall <"$work/time"
echo "MEASURE lines $LINES"
echo "MEASURE scan $SCAN ($(grep -o '[0-9]* executables hashed' "$work/agent.err"))"
echo "MEASURE peak_rss_mib $(awk "BEGIN{printf \"%.1f\", $rss/1024}")"
echo "MEASURE cpu_seconds $(awk "BEGIN{printf \"%.2f\", $user+$sys}") (user $user, sys $sys)"
echo "MEASURE wall_seconds $wall"

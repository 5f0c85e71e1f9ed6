#!/bin/bash
# CPU per completed order, per thread group, over 12 s in the middle of a month-end ingest.
# usage: load-tests/cpu-per-order.sh SWITCHYARD_BINARY OUT_DIR
# (Build first: cargo build --release. Run two binaries alternately to compare them: the
# machine's speed varies by ±10-15 % from run to run; see docs/architecture.md, "Audit events
# packed per write, and where a writer's time goes by line".)
set -eu
bin=$(realpath "$1"); out=$2; mkdir -p "$out"
cd "$(dirname "$0")/.."
./target/release/switchyard-loadtest --scenario load-tests/scenarios/month-end.toml \
  --switchyard "$bin" --out "$out" > "$out/log" 2>&1 &
until grep -q "switchyard ready" "$out/log"; do sleep 0.5; done
sleep 6
pid=$(pgrep -f "^$bin run" | head -1)
port=$(tr '\0' '\n' < /proc/$pid/environ | grep SWITCHYARD__HTTP__LISTEN | cut -d= -f2)
completed() { curl -s "http://$port/metrics" | grep -E '^switchyard_order_status_total\{status="completed"' | awk '{s+=$2} END {print s}'; }
ticks() { for t in /proc/$pid/task/*; do echo "$(basename $t)|$(cat $t/comm 2>/dev/null)|$(sed 's/.*) //' $t/stat 2>/dev/null | awk '{print $12+$13}')"; done; }
c0=$(completed); ticks > "$out/cpu-a.txt"
sleep 12
c1=$(completed); ticks > "$out/cpu-b.txt"
wait
python3 - "$out" "$c0" "$c1" <<'PY'
import os, sys, collections
out, c0, c1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
hz = os.sysconf('SC_CLK_TCK')
def read(p):
    d = {}
    for l in open(p):
        tid, rest = l.rstrip('\n').split('|', 1)
        name, v = rest.rsplit('|', 1)
        d[tid] = (name, int(v) if v else 0)
    return d
a, b = read(f"{out}/cpu-a.txt"), read(f"{out}/cpu-b.txt")
g = collections.Counter()
for tid, (name, v) in b.items():
    if tid in a:
        k = ('meter arbiters' if name.startswith('actix') else 'store writers' if name.startswith('store-writer')
             else 'main runtime' if name.startswith(('tokio', 'switchyard', 'sy-')) else 'other')
        g[k] += (v - a[tid][1]) / hz
n = c1 - c0
print(f"{n:.0f} orders completed in 12 s ({n/12:.0f}/s); CPU per order: " +
      ", ".join(f"{k} {v*1e6/n:.0f} µs" for k, v in sorted(g.items())) + f"; total {sum(g.values())*1e6/n:.0f} µs")
PY

#!/usr/bin/env bash
# Starts (or stops) the Kafka-API-compatible broker tansu for load tests against an external
# broker: `load-tests/tansu.sh start` prints the bootstrap address to pass as
# `switchyard-loadtest --brokers ...`; `load-tests/tansu.sh stop` stops it.
# tansu is built from crates.io the first time (about 10 minutes on 2 cores) into
# load-tests/.tansu (or $TANSU_ROOT). Storage is tansu's in-memory engine: a restart of the broker
# starts empty. The harness creates its topics (suffixed with the run id) itself.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="${TANSU_ROOT:-$here/.tansu}"
port="${TANSU_PORT:-19092}"
pidfile="$root/tansu.pid"
bin="$root/bin/tansu"

case "${1:-start}" in
  start)
    if [ ! -x "$bin" ]; then
      echo "building tansu 0.6.0 into $root (once; about 10 minutes on 2 cores)" >&2
      cargo install tansu --version 0.6.0 --features dynostore --locked --root "$root" >&2 \
        || cargo install tansu --version 0.6.0 --features dynostore --root "$root" >&2
    fi
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "127.0.0.1:$port"; exit 0
    fi
    mkdir -p "$root"
    "$bin" broker --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine memory://tansu/ >"$root/tansu.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "127.0.0.1:$port"; exit 0; fi
      sleep 0.1
    done
    echo "tansu did not listen on $port; see $root/tansu.log" >&2; exit 1
    ;;
  stop)
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

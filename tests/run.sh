#!/usr/bin/env bash
# The test command (README): starts the real servers some tests need (Apache Cassandra on
# 127.0.0.1:9042 for the ScyllaDB store, Apache Kafka on 127.0.0.1:9092; their jars come from
# Maven Central the first time, see deploy/local/), runs `cargo test --release` with their
# addresses, and stops the servers it started (one already running is used and left running).
# Arguments go to cargo test, e.g. `tests/run.sh --test store_contract`.
set -euo pipefail
cd "$(dirname "$0")/.."

started=()
cleanup() {
  for s in "${started[@]+"${started[@]}"}"; do deploy/local/"$s".sh stop || true; done
}
trap cleanup EXIT

# The web console's browser test (tests/console.rs) drives Debian's Chromium with playwright-core
# from npm: both installed here when missing (Chromium with apt-get, as root).
if [ ! -d tests/console/node_modules/playwright-core ]; then
  (cd tests/console && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
  else
    echo "tests/run.sh: /usr/bin/chromium is missing; install Debian's chromium (sudo apt-get install chromium) for the console test" >&2
  fi
fi

# A server this script starts begins empty (each test makes its own keyspace or topics, and a
# one-node Cassandra with a 2 GiB heap holds a run's worth of them, not many runs').
export CASSANDRA_HEAP=${CASSANDRA_HEAP:-2g}
for s in cassandra kafka; do
  if ! deploy/local/"$s".sh status >/dev/null 2>&1; then
    started+=("$s")
    deploy/local/"$s".sh wipe
  fi
done
# Both start at once (the first start fetches their jars).
cql_out=$(mktemp) kafka_out=$(mktemp)
deploy/local/cassandra.sh start >"$cql_out" & cql_pid=$!
deploy/local/kafka.sh start >"$kafka_out" & kafka_pid=$!
wait "$cql_pid" || { echo "tests/run.sh: Cassandra did not start" >&2; exit 1; }
wait "$kafka_pid" || { echo "tests/run.sh: Kafka did not start" >&2; exit 1; }
SWITCHYARD_TEST_CQL=$(tail -1 "$cql_out")
SWITCHYARD_TEST_KAFKA=$(tail -1 "$kafka_out")
rm -f "$cql_out" "$kafka_out"
export SWITCHYARD_TEST_CQL SWITCHYARD_TEST_KAFKA
# A test that needs a server fails without one (rather than saying SKIPPED).
export SWITCHYARD_REQUIRE_SERVERS=1
echo "tests/run.sh: CQL on $SWITCHYARD_TEST_CQL, Kafka on $SWITCHYARD_TEST_KAFKA"

cargo test --release "$@"

# The end-to-end binaries once more on the production parts: the ScyllaDB store on Cassandra
# and the real Kafka broker (tests/common: SWITCHYARD_TEST_BACKEND=scylla). Not when arguments
# chose what to run.
if [ "$#" -eq 0 ]; then
  echo "tests/run.sh: the end-to-end tests again with store.backend = scylla and the real Kafka broker"
  SWITCHYARD_TEST_BACKEND=scylla cargo test --release \
    --test spine --test policy --test campaign_e2e --test kill_restart --test reads --test moves
fi

#!/bin/bash
# One-shot topic set-up for deploy/compose/docker-compose.yml (service kafka-init, in the
# apache/kafka image). Creates switchyard's topics with one partition count, then checks that
# every one of them has it (a topic created earlier with another count, e.g. by a switchyard
# started before this ran, is refused here rather than discovered later).
#
# Every meter-keyed topic must have the same partition count, equal to
# store.scylla.ownership_units in deploy/compose/switchyard.toml: keep PARTITIONS,
# KAFKA_NUM_PARTITIONS and that key equal (deploy/validate.sh checks it). The topic names are
# the defaults of config/default.toml [topics] (also checked).
set -euo pipefail

BOOTSTRAP="${BOOTSTRAP:-kafka:9092}"
PARTITIONS="${PARTITIONS:-12}"
TOPICS_BIN="${TOPICS_BIN:-/opt/kafka/bin/kafka-topics.sh}"

TOPICS=(
  switchyard.orders.v1
  switchyard.order-events.v1
  switchyard.dead-letter.v1
  switchyard.exceptions.v1
  switchyard.head-end-commands.v1
  switchyard.head-end-results.v1
  switchyard.customer-facts.v1
  switchyard.control.v1
  switchyard.campaign-control.v1
  switchyard.campaign-events.v1
  switchyard.reads.v1
)
# Tables replayed from the start on every start: compacted.
COMPACTED_TOPICS=(
  switchyard.meter-registry.v1
  switchyard.weather.v1
  switchyard.emergencies.v1
)

create() {
  "$TOPICS_BIN" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$1" --partitions "$PARTITIONS" --replication-factor 1 "${@:2}"
}

# One JVM per topic: run them side by side, then wait for each (its status counts).
pids=()
for t in "${TOPICS[@]}"; do
  create "$t" &
  pids+=("$!")
done
for t in "${COMPACTED_TOPICS[@]}"; do
  create "$t" --config cleanup.policy=compact &
  pids+=("$!")
done
for p in "${pids[@]}"; do
  wait "$p"
done

described="$("$TOPICS_BIN" --bootstrap-server "$BOOTSTRAP" --describe)"
bad=0
for t in "${TOPICS[@]}" "${COMPACTED_TOPICS[@]}"; do
  count="$(printf '%s\n' "$described" \
    | awk -v t="$t" '$1 == "Topic:" && $2 == t { for (i = 1; i < NF; i++) if ($i == "PartitionCount:") print $(i + 1) }')"
  if [ "$count" != "$PARTITIONS" ]; then
    echo "kafka-init: topic $t has ${count:-no} partitions, expected $PARTITIONS" >&2
    bad=1
  fi
done
[ "$bad" -eq 0 ] || exit 1
echo "kafka-init: ${#TOPICS[@]} + ${#COMPACTED_TOPICS[@]} topics with $PARTITIONS partitions each"

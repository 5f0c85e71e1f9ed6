#!/usr/bin/env bash
# One Apache Kafka 4 broker (KRaft, combined broker + controller) on 127.0.0.1:9092: the real
# broker for tests and load tests.
#
#   deploy/local/kafka.sh start   fetch the jars once (Maven Central), format the log directory
#                                 once, start in the background, wait until it answers, print
#                                 127.0.0.1:9092, exit 0
#   deploy/local/kafka.sh stop    end it by its pid (SIGTERM, then SIGKILL after 60 s)
#   deploy/local/kafka.sh wipe    remove its data (it must be stopped)
#   deploy/local/kafka.sh status  print the address if it answers, exit 1 if not
#
# Everything lives under deploy/local/.servers/kafka (git-ignored; SWITCHYARD_SERVERS_DIR moves
# it). Heap: KAFKA_HEAP (default 512m). Version: KAFKA_VERSION (default 4.1.1).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
base=${SWITCHYARD_SERVERS_DIR:-$here/.servers}/kafka
version=${KAFKA_VERSION:-4.1.1}
heap=${KAFKA_HEAP:-512m}
lib=$base/lib-$version
conf=$base/conf
pidfile=$base/kafka.pid
host=127.0.0.1
port=9092


fetch() {
  [ -f "$lib/.complete" ] && return 0
  echo "kafka: fetching org.apache.kafka:kafka_2.13:$version and its dependencies (once)" >&2
  mkdir -p "$base"
  cat >"$base/pom-$version.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>switchyard.local</groupId><artifactId>kafka-server</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>$version</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>1.7.36</version>
    </dependency>
  </dependencies>
</project>
POM
  rm -rf "$lib"
  mvn -q -B -f "$base/pom-$version.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$lib" >&2
  # slf4j-simple at the slf4j-api version Kafka resolves (1.7): the broker logs nothing without a binding.
  touch "$lib/.complete"
}

write_conf() {
  mkdir -p "$conf" "$base/data" "$base/logs"
  cat >"$conf/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$host:9093
listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:9093
advertised.listeners=PLAINTEXT://$host:$port
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$base/data
num.partitions=8
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
}


launch() {
  write_conf
  if [ ! -f "$base/data/meta.properties" ]; then
    local id
    id=$(java -cp "$lib/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
    java -cp "$lib/*" kafka.tools.StorageTool format -t "$id" -c "$conf/server.properties" \
      --ignore-formatted >"$base/logs/format.log" 2>&1 ||
      { echo "kafka: formatting $base/data failed:" >&2; cat "$base/logs/format.log" >&2; exit 1; }
  fi
  nohup java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError \
    -Djava.net.preferIPv4Stack=true -Djava.awt.headless=true \
    -Dorg.slf4j.simpleLogger.defaultLogLevel=info \
    -Dorg.slf4j.simpleLogger.showDateTime=true \
    -cp "$lib/*" kafka.Kafka "$conf/server.properties" >"$base/logs/server.log" 2>&1 &
  echo $! >"$pidfile"
}

label=kafka
start_limit=180
startup_log=$base/logs/server.log
# shellcheck source=deploy/local/server-common.sh
. "$here/server-common.sh"
server_main "$@"

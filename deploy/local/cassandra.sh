#!/usr/bin/env bash
# One Apache Cassandra 5.0 node on 127.0.0.1:9042 for tests and load tests: the CQL server that
# stands in for ScyllaDB here (same protocol; the scylla driver's own CI runs against it).
#
#   deploy/local/cassandra.sh start   fetch the jars once (Maven Central), start in the background,
#                                     wait until CQL answers, print 127.0.0.1:9042, exit 0
#   deploy/local/cassandra.sh stop    end it by its pid (SIGTERM, then SIGKILL after 60 s)
#   deploy/local/cassandra.sh wipe    remove its data (it must be stopped)
#   deploy/local/cassandra.sh status  print the address if it answers, exit 1 if not
#   deploy/local/cassandra.sh nodetool ARGS...   Cassandra's nodetool against this node (JMX),
#                                     e.g. `nodetool flush KS` then `nodetool tablestats KS`
#
# Everything lives under deploy/local/.servers/cassandra (git-ignored; SWITCHYARD_SERVERS_DIR
# moves it). Heap: CASSANDRA_HEAP (default 1g). Version: CASSANDRA_VERSION (default 5.0.9).
# A second node of its own (a test that stops its server) takes CASSANDRA_NAME (its folder),
# CASSANDRA_PORT (CQL, default 9042), CASSANDRA_STORAGE_PORT (7000) and CASSANDRA_JMX_PORT
# (7199); the jars are shared. What had to change from the recipe in the design notes is
# written in docs/real-servers.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
servers=${SWITCHYARD_SERVERS_DIR:-$here/.servers}
name=${CASSANDRA_NAME:-cassandra}
base=$servers/$name
version=${CASSANDRA_VERSION:-5.0.9}
heap=${CASSANDRA_HEAP:-1g}
lib=$servers/cassandra/lib-$version
conf=$base/conf
pidfile=$base/cassandra.pid
host=127.0.0.1
port=${CASSANDRA_PORT:-9042}
storage_port=${CASSANDRA_STORAGE_PORT:-7000}
jmx_port=${CASSANDRA_JMX_PORT:-7199}


fetch() {
  [ -f "$lib/.complete" ] && return 0
  echo "cassandra: fetching org.apache.cassandra:cassandra-all:$version and its dependencies (once)" >&2
  mkdir -p "$servers/cassandra"
  cat >"$servers/cassandra/pom-$version.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>switchyard.local</groupId><artifactId>cassandra-server</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId><artifactId>cassandra-all</artifactId>
      <version>$version</version>
    </dependency>
  </dependencies>
</project>
POM
  rm -rf "$lib"
  mvn -q -B -f "$servers/cassandra/pom-$version.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$lib" >&2
  touch "$lib/.complete"
}

write_conf() {
  mkdir -p "$conf" "$base/data" "$base/logs" "$base/tmp"
  cat >"$conf/cassandra.yaml" <<YAML
cluster_name: switchyard-test
num_tokens: 16
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$host:$storage_port"
listen_address: $host
rpc_address: $host
storage_port: $storage_port
start_native_transport: true
native_transport_port: $port
commitlog_sync: periodic
commitlog_sync_period: 10000ms
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
data_file_directories:
  - $base/data/data
commitlog_directory: $base/data/commitlog
saved_caches_directory: $base/data/saved_caches
hints_directory: $base/data/hints
cdc_raw_directory: $base/data/cdc_raw
YAML
  cat >"$conf/logback.xml" <<XML
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$base/logs/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
XML
}


# The module exports and opens Cassandra 5 needs on Java 17 (the server and nodetool).
java_modules() {
  local m
  add_exports="" add_opens=""
  for m in java.base/jdk.internal.misc java.management.rmi/com.sun.jmx.remote.internal.rmi \
    java.rmi/sun.rmi.registry java.rmi/sun.rmi.server java.sql/java.sql java.base/java.lang.ref \
    jdk.unsupported/sun.misc jdk.compiler/com.sun.tools.javac.file jdk.attach/sun.tools.attach; do
    add_exports="$add_exports --add-exports $m=ALL-UNNAMED"
  done
  for m in java.base/java.lang.module java.base/jdk.internal.loader java.base/jdk.internal.ref \
    java.base/jdk.internal.reflect java.base/jdk.internal.math java.base/jdk.internal.module \
    java.base/jdk.internal.util.jar jdk.management/com.sun.management.internal \
    java.base/sun.nio.ch java.base/java.io java.base/java.lang.reflect \
    jdk.compiler/com.sun.tools.javac java.base/java.lang java.base/java.util; do
    add_opens="$add_opens --add-opens $m=ALL-UNNAMED"
  done
}

launch() {
  write_conf
  local add_exports add_opens
  java_modules
  local jamm
  jamm=$(ls "$lib"/jamm-*.jar 2>/dev/null | head -1 || true)
  # shellcheck disable=SC2086
  nohup java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Xss512k \
    -Djava.net.preferIPv4Stack=true -Djdk.attach.allowAttachSelf=true \
    -Dio.netty.tryReflectionSetAccessible=true \
    $add_exports $add_opens ${jamm:+-javaagent:$jamm} \
    -Dcassandra.config="file://$conf/cassandra.yaml" \
    -Dcassandra.storagedir="$base/data" -Dcassandra.logdir="$base/logs" \
    -Dcassandra-foreground=yes -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.ring_delay_ms=5000 -Dcassandra.unsafesystem=true \
    -Dcassandra.jmx.local.port="$jmx_port" \
    -Dlogback.configurationFile="$conf/logback.xml" -Djna.tmpdir="$base/tmp" \
    -Djava.io.tmpdir="$base/tmp" \
    -cp "$conf:$lib/*" org.apache.cassandra.service.CassandraDaemon \
    >"$base/logs/stdout.log" 2>&1 &
  echo $! >"$pidfile"
}

label=cassandra
start_limit=240
startup_log=$base/logs/system.log
# shellcheck source=deploy/local/server-common.sh
. "$here/server-common.sh"
if [ "${1:-}" = nodetool ]; then
  shift
  java_modules
  # shellcheck disable=SC2086
  exec java $add_exports $add_opens -cp "$conf:$lib/*" org.apache.cassandra.tools.NodeTool -h "$host" -p "$jmx_port" "$@"
fi
server_main "$@"

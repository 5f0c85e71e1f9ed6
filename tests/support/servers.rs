//! The real servers some tests need: a CQL server (Apache Cassandra, standing in for ScyllaDB)
//! and an Apache Kafka broker, started by `deploy/local/cassandra.sh` and `deploy/local/kafka.sh`
//! (`tests/run.sh` and `.ci/run` start both). Their addresses come from `SWITCHYARD_TEST_CQL`
//! and `SWITCHYARD_TEST_KAFKA`. With `SWITCHYARD_REQUIRE_SERVERS` set (CI) a missing server
//! fails the test; without it, a test finds the local default address or says SKIPPED.
//! Shared by test binaries through `#[path]`.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

fn answers(addr: &str) -> bool {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a: SocketAddr| {
            TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok()
        })
}

fn server(var: &str, default: &str, script: &str, test: &str) -> Option<String> {
    let required = std::env::var_os("SWITCHYARD_REQUIRE_SERVERS").is_some();
    match std::env::var(var) {
        Ok(addr) => {
            assert!(
                answers(&addr),
                "{var}={addr}, and nothing answers there: start it with {script} start"
            );
            Some(addr)
        }
        Err(_) if required => panic!(
            "{test} needs a real server: {var} is not set and SWITCHYARD_REQUIRE_SERVERS is (run {script} start and set {var})"
        ),
        Err(_) if answers(default) => Some(default.to_string()),
        Err(_) => {
            eprintln!("SKIPPED {test}: no server on {default}; run {script} start (or tests/run.sh)");
            None
        }
    }
}

/// The CQL server's address, if there is one (see the module's comment).
pub fn cql(test: &str) -> Option<String> {
    server(
        "SWITCHYARD_TEST_CQL",
        "127.0.0.1:9042",
        "deploy/local/cassandra.sh",
        test,
    )
}

/// The Kafka broker's bootstrap address, if there is one.
pub fn kafka(test: &str) -> Option<String> {
    server(
        "SWITCHYARD_TEST_KAFKA",
        "127.0.0.1:9092",
        "deploy/local/kafka.sh",
        test,
    )
}

/// Drops a keyspace (a test's fresh start).
pub fn drop_keyspace(cql: &str, keyspace: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = scylla::client::session_builder::SessionBuilder::new()
            .known_node(cql)
            .build()
            .await
            .expect("a CQL session");
        let mut q =
            scylla::statement::Statement::new(format!("DROP KEYSPACE IF EXISTS {keyspace}"));
        q.set_request_timeout(Some(Duration::from_secs(60)));
        s.query_unpaged(q, &[]).await.expect("keyspace dropped");
        s.await_schema_agreement().await.expect("schema agreement");
    });
}

/// `config` on the ScyllaDB store at `cql`, in `keyspace` (dropped first: a fresh store).
pub fn on_scylla(config: &mut switchyard::Config, cql: &str, keyspace: &str) {
    drop_keyspace(cql, keyspace);
    config.store_on_scylla(cql, keyspace);
}

//! The store contract (`switchyard::store::contract`) on each backend: the embedded store as
//! the application opens it (sharded redb files in a temporary directory), and the ScyllaDB
//! store on a real CQL server (Apache Cassandra 5 from `deploy/local/cassandra.sh`; each case
//! in a fresh keyspace). Plus what only the ScyllaDB store has to show: retried writes, the
//! schema migrations, the settings it refuses to change, and ownership units that are the
//! orders topic's partitions as librdkafka computes them.

#[path = "support/servers.rs"]
mod servers;

use std::sync::Arc;

use switchyard::store::contract::{self, CASES};
use switchyard::store::Store;
use switchyard::Config;

fn config() -> Config {
    Config::load_with_env(None, Vec::<(String, String)>::new()).unwrap()
}

fn case(name: &str) -> (usize, fn(&dyn Store)) {
    CASES
        .iter()
        .enumerate()
        .find(|(_, (n, _))| *n == name)
        .map(|(i, (_, f))| (i, *f))
        .unwrap_or_else(|| panic!("no contract case {name}"))
}

fn embedded(name: &str) {
    let (_, f) = case(name);
    let dir = tempfile::tempdir().unwrap();
    let mut c = config();
    c.data_dir = dir.path().to_path_buf();
    let store = switchyard::open_store(&c).unwrap();
    f(store.as_ref());
}

fn scylla_store(test: &str, keyspace: &str) -> Option<(Config, Arc<dyn Store>)> {
    let cql = servers::cql(test)?;
    let mut c = config();
    servers::on_scylla(&mut c, &cql, keyspace);
    let store = switchyard::open_store(&c).expect("the ScyllaDB store opens");
    Some((c, store))
}

fn scylla(name: &str) {
    let (i, f) = case(name);
    if let Some((_, store)) = scylla_store(name, &format!("contract_{i}")) {
        f(store.as_ref());
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[test]
            fn embedded() {
                super::embedded(stringify!($name))
            }
            #[test]
            fn scylla() {
                super::scylla(stringify!($name))
            }
        })*

        #[test]
        fn every_contract_case_runs_here() {
            let here = [$(stringify!($name)),*];
            for (name, _) in CASES {
                assert!(here.contains(name), "add {name} to on_both! in tests/store_contract.rs");
            }
        }
    };
}

on_both!(
    an_order_carried_by_an_exchange_moves_to_its_new_meter,
    read_watches_are_set_replaced_cleared_and_loaded_by_unit,
    orders_are_stored_once_and_indexed_while_open,
    an_open_orders_status_comes_from_its_trail_and_a_final_one_from_its_record,
    a_meter_with_a_command_in_flight_is_open_work,
    commands_keep_their_results_in_order,
    a_result_of_the_command_in_flight_is_stored_whole_and_a_later_one_appended,
    exceptions_round_trip,
    a_meters_trail_pages_newest_first_through_interleaved_meters,
    the_trail_pages_across_days,
    a_row_stamped_before_the_row_written_ahead_of_it_keeps_the_trail_in_time_order,
    outbox_entries_are_numbered_in_order_and_deleted_when_acknowledged,
    campaigns_their_orders_and_releases,
    kept_table_records_are_replaced_and_removed,
    an_assignment_loads_exactly_the_open_work_of_its_units,
    a_unit_lease_changes_only_from_what_it_is,
    orders_page_newest_first_within_their_period,
    exceptions_page_and_their_tasks_change_only_from_the_version_read,
);

#[test]
fn scylla_a_retried_write_lands_its_rows_once() {
    if let Some((_, store)) = scylla_store("a_retried_write_lands_its_rows_once", "contract_retry")
    {
        contract::a_retried_write_lands_its_rows_once(store.as_ref());
    }
}

/// What one process wrote, another (a restart) reads; the schema is applied once.
#[test]
fn scylla_a_second_process_reads_what_the_first_wrote_and_migrates_nothing() {
    let Some((c, store)) = scylla_store("scylla_restart", "contract_restart") else {
        return;
    };
    store
        .apply(&[switchyard::store::WriteBatch {
            new_orders: vec![contract::accepted("SO-1", "M-1", 0)],
            ..Default::default()
        }])
        .unwrap();
    drop(store);
    assert_eq!(
        switchyard::migrate_store(&c).unwrap(),
        Vec::<i32>::new(),
        "nothing left to apply"
    );
    let again = switchyard::open_store(&c).unwrap();
    assert_eq!(
        again.order("SO-1").unwrap(),
        Some(contract::accepted("SO-1", "M-1", 0))
    );
    assert_eq!(again.meters_with_open_work().unwrap(), ["M-1"]);
}

/// The settings that shape stored keys cannot change under a keyspace: the error names the key.
/// (The configuration comes from the environment, as an operator would override it.)
#[test]
fn scylla_a_keyspace_refuses_other_ownership_units() {
    let Some(cql) = servers::cql("scylla_settings") else {
        return;
    };
    servers::drop_keyspace(&cql, "contract_settings");
    let env = |units: &str| {
        [
            ("SWITCHYARD__STORE__BACKEND", "scylla"),
            ("SWITCHYARD__STORE__SCYLLA__NODES", cql.as_str()),
            ("SWITCHYARD__STORE__SCYLLA__KEYSPACE", "contract_settings"),
            ("SWITCHYARD__STORE__SCYLLA__OWNERSHIP_UNITS", units),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    };
    let first = Config::load_with_env(None, env("16")).unwrap();
    drop(switchyard::open_store(&first).expect("a new keyspace takes any units"));
    let other = Config::load_with_env(None, env("12")).unwrap();
    let err = switchyard::open_store(&other)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("store.scylla.ownership_units = 16") && err.contains("it is 12 now"),
        "{err}"
    );
    // The same value again opens.
    drop(switchyard::open_store(&first).expect("the same units open"));
}

/// The ScyllaDB store's ownership units are the orders topic's partitions: the unit it computes
/// for a meter is the partition librdkafka's producer puts that meter's records in, with either
/// keyed partitioner (so an instance that owns a partition can load exactly its meters).
#[tokio::test]
async fn ownership_units_are_the_partitions_librdkafka_chooses() {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use switchyard::domain::Partitioner;
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic("orders", 7, 1).unwrap();
    for (name, p) in [
        ("consistent_random", Partitioner::Crc32),
        ("murmur2_random", Partitioner::Murmur2),
    ] {
        assert_eq!(Partitioner::of_librdkafka(Some(name)), Some(p));
        let producer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("partitioner", name)
            .create()
            .unwrap();
        for i in 0..200 {
            let key = format!("MTR-{i:07}");
            let delivered = producer
                .send(
                    FutureRecord::to("orders").key(&key).payload("{}"),
                    std::time::Duration::from_secs(5),
                )
                .await
                .expect("delivered");
            assert_eq!(
                delivered.partition as u32,
                p.partition(key.as_bytes(), 7),
                "{name} {key}"
            );
        }
    }
}

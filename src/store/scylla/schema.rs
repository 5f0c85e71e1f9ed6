//! The ScyllaDB schema as versioned CQL migrations (`migrations/NNNN_name.cql`, compiled into
//! the binary), applied in order by `switchyard migrate` or at start
//! (`store.scylla.migrate_at_start`). Each applied migration is recorded with a checksum of its
//! text in `schema_migrations`; a released migration is never edited (a changed one is refused).
//! The settings that shape stored keys (the audit bucket, the ownership units) are recorded
//! once and checked at every start.

use scylla::client::session::Session;

use super::{ScyllaOptions, StoreError};

/// The migrations, in order: `(version, name, text)`.
pub(crate) const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("migrations/0001_initial.cql")),
    (
        2,
        "unit_leases",
        include_str!("migrations/0002_unit_leases.cql"),
    ),
    (
        3,
        "order_search_and_tasks",
        include_str!("migrations/0003_order_search_and_tasks.cql"),
    ),
    (
        4,
        "read_watch",
        include_str!("migrations/0004_read_watch.cql"),
    ),
];

fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what}: {e}"))
}

/// FNV-1a of the text, as hex: a migration's fingerprint.
fn checksum(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The statements of a migration's text with its placeholders filled in: `;`-terminated,
/// `--` comments dropped.
pub(crate) fn statements(text: &str, o: &ScyllaOptions) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = match line.find("--") {
            Some(i) => &line[..i],
            None => line,
        };
        if line.trim().is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.trim_end().ends_with(';') {
            out.push(fill(current.trim().trim_end_matches(';'), o));
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(fill(current.trim(), o));
    }
    out
}

fn fill(s: &str, o: &ScyllaOptions) -> String {
    s.replace("{keyspace}", &o.keyspace).replace(
        "{audit_window_minutes}",
        &(o.audit_bucket_secs / 60).max(1).to_string(),
    )
}

/// The keyspace's CREATE statement.
pub(crate) fn create_keyspace(o: &ScyllaOptions) -> String {
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {} AND durable_writes = true",
        o.keyspace,
        o.replication.cql()
    )
}

/// Creates the keyspace if needed and applies the migrations not applied yet. Returns the
/// versions it applied.
pub(crate) async fn migrate(session: &Session, o: &ScyllaOptions) -> Result<Vec<i32>, StoreError> {
    session
        .query_unpaged(create_keyspace(o), &[])
        .await
        .map_err(|e| backend(&format!("creating keyspace {}", o.keyspace), e))?;
    session
        .query_unpaged(
            format!(
                "CREATE TABLE IF NOT EXISTS {}.schema_migrations (version int PRIMARY KEY, name text, checksum text, applied_at timestamp) WITH compaction = {{'class': 'SizeTieredCompactionStrategy'}}",
                o.keyspace
            ),
            &[],
        )
        .await
        .map_err(|e| backend("creating schema_migrations", e))?;
    agree(session).await?;
    let applied = applied(session, o).await?;
    let mut done = Vec::new();
    for (version, name, text) in MIGRATIONS {
        let sum = checksum(text);
        if let Some((_, was)) = applied.iter().find(|(v, _)| v == version) {
            if *was != sum {
                return Err(StoreError::Setup {
                    what: format!("keyspace {}", o.keyspace),
                    message: format!("migration {version} ({name}) was applied with other text (checksum {was}, this switchyard has {sum}): a released migration must not change; run the switchyard version that applied it"),
                });
            }
            continue;
        }
        for stmt in statements(text, o) {
            session
                .query_unpaged(stmt.clone(), &[])
                .await
                .map_err(|e| backend(&format!("migration {version} ({name})"), e))?;
        }
        agree(session).await?;
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {}.schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, toTimestamp(now()))",
                    o.keyspace
                ),
                (*version, *name, sum.as_str()),
            )
            .await
            .map_err(|e| backend("recording a migration", e))?;
        tracing::info!(version, name, keyspace = %o.keyspace, "schema migration applied");
        done.push(*version);
    }
    Ok(done)
}

/// Applied migrations: `(version, checksum)`.
pub(crate) async fn applied(
    session: &Session,
    o: &ScyllaOptions,
) -> Result<Vec<(i32, String)>, StoreError> {
    let rows = session
        .query_unpaged(
            format!(
                "SELECT version, checksum FROM {}.schema_migrations",
                o.keyspace
            ),
            &[],
        )
        .await
        .map_err(|e| backend("reading schema_migrations", e))?
        .into_rows_result()
        .map_err(|e| backend("reading schema_migrations", e))?;
    let mut out = Vec::new();
    for r in rows
        .rows::<(i32, Option<String>)>()
        .map_err(|e| backend("reading schema_migrations", e))?
    {
        let (v, sum) = r.map_err(|e| backend("reading schema_migrations", e))?;
        out.push((v, sum.unwrap_or_default()));
    }
    Ok(out)
}

/// Checks that every migration this switchyard knows is applied (a store opened without
/// `migrate_at_start`).
pub(crate) async fn check_current(session: &Session, o: &ScyllaOptions) -> Result<(), StoreError> {
    let applied = applied(session, o).await.map_err(|e| StoreError::Setup {
        what: format!("keyspace {}", o.keyspace),
        message: format!(
            "{e}. Run `switchyard migrate` first (or set store.scylla.migrate_at_start = true)"
        ),
    })?;
    let missing: Vec<i32> = MIGRATIONS
        .iter()
        .map(|(v, _, _)| *v)
        .filter(|v| !applied.iter().any(|(a, _)| a == v))
        .collect();
    if !missing.is_empty() {
        return Err(StoreError::Setup {
            what: format!("keyspace {}", o.keyspace),
            message: format!("schema migrations {missing:?} are not applied; run `switchyard migrate` first (or set store.scylla.migrate_at_start = true)"),
        });
    }
    Ok(())
}

async fn agree(session: &Session) -> Result<(), StoreError> {
    session
        .await_schema_agreement()
        .await
        .map(|_| ())
        .map_err(|e| backend("waiting for the nodes to agree on the schema", e))
}

/// Records the settings that shape stored keys the first time, and refuses to go on when the
/// configuration has other values. The one lightweight transaction of the store: two instances
/// starting at once must agree on one value (it runs once per start, off the order path).
pub(crate) async fn check_settings(session: &Session, o: &ScyllaOptions) -> Result<(), StoreError> {
    for (name, key, value) in [
        (
            "audit_bucket_secs",
            "store.scylla.audit_bucket_secs",
            o.audit_bucket_secs.to_string(),
        ),
        (
            "ownership_units",
            "store.scylla.ownership_units",
            o.units.to_string(),
        ),
        (
            "partitioner",
            "kafka.client.partitioner",
            format!("{:?}", o.partitioner).to_ascii_lowercase(),
        ),
    ] {
        let r = session
            .query_unpaged(
                format!(
                    "INSERT INTO {}.settings (name, value) VALUES (?, ?) IF NOT EXISTS",
                    o.keyspace
                ),
                (name, value.as_str()),
            )
            .await
            .map_err(|e| backend("recording the store's settings", e))?
            .into_rows_result()
            .map_err(|e| backend("recording the store's settings", e))?;
        // The answer's first column says whether it was applied; when not, the row as stored
        // follows (its column order differs between servers: find `value` by name).
        let value_at = r.column_specs().iter().position(|c| c.name() == "value");
        let (applied, stored): (bool, Option<String>) = match value_at {
            Some(i) => {
                let row = r
                    .first_row::<scylla::value::Row>()
                    .map_err(|e| backend("recording the store's settings", e))?;
                let applied = matches!(
                    row.columns.first(),
                    Some(Some(scylla::value::CqlValue::Boolean(true)))
                );
                let stored = match row.columns.get(i) {
                    Some(Some(scylla::value::CqlValue::Text(s))) => Some(s.clone()),
                    _ => None,
                };
                (applied, stored)
            }
            None => (true, None),
        };
        if !applied && stored.as_deref() != Some(value.as_str()) {
            return Err(StoreError::Setup {
                what: format!("keyspace {}", o.keyspace),
                message: format!(
                    "the keyspace was written with {key} = {}, and it is {value} now: stored keys would be looked for in the wrong place. Set {key} back (or use a new keyspace)",
                    stored.unwrap_or_default()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_split_with_comments_dropped_and_placeholders_filled() {
        let o = ScyllaOptions::for_tests("ks_test");
        let s = statements(MIGRATIONS[0].2, &o);
        assert!(s.len() >= 12, "{}", s.len());
        assert!(s
            .iter()
            .all(|x| x.starts_with("CREATE TABLE IF NOT EXISTS ks_test.")));
        assert!(s.iter().all(|x| !x.contains('{') || x.contains("'class'")));
        assert!(
            s.iter().all(|x| x.contains("compaction")),
            "compaction set on every table"
        );
        let audit = s.iter().find(|x| x.contains("ks_test.audit (")).unwrap();
        assert!(
            audit.contains("'compaction_window_size': '1440'"),
            "{audit}"
        );
        assert!(audit.contains("CLUSTERING ORDER BY (at DESC, seq DESC)"));
        // Portable: nothing only ScyllaDB understands.
        for x in &s {
            for word in [
                "tablets",
                "BYPASS CACHE",
                "USING TIMEOUT",
                "IncrementalCompaction",
            ] {
                assert!(!x.contains(word), "{word} in {x}");
            }
        }
    }

    #[test]
    fn replication_is_written_as_cql() {
        let mut o = ScyllaOptions::for_tests("ks");
        assert_eq!(
            create_keyspace(&o),
            "CREATE KEYSPACE IF NOT EXISTS ks WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1} AND durable_writes = true"
        );
        o.replication =
            super::super::Replication::NetworkTopology(vec![("dc1".into(), 3), ("dc2".into(), 3)]);
        assert!(create_keyspace(&o)
            .contains("{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 3}"));
    }
}

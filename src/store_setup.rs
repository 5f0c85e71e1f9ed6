//! From `[store]` to a store: the ScyllaDB store's options (TLS files read, credentials, the
//! partitioner of the orders topic) built from the configuration, for the application, for
//! `switchyard migrate` and for tools. The store itself does not read the configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, CqlConsistency, ReplicationStrategy, StoreBackend};
use crate::domain::Partitioner;
use crate::store::{Replication, ScyllaOptions, ScyllaStore, StoreError};

fn tls_error(key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Setup {
        what: key.to_string(),
        message: format!("{e}. Check {key}"),
    }
}

/// The rustls client configuration of `[store.scylla.tls]`.
fn tls(config: &Config) -> Result<Option<Arc<rustls::ClientConfig>>, StoreError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let t = &config.store.scylla.tls;
    if !t.enabled {
        return Ok(None);
    }
    let (ca, key) = match &t.ca_file {
        Some(p) => (p.clone(), "store.scylla.tls.ca_file"),
        None => (
            std::path::PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            "store.scylla.tls.ca_file (unset: the system's authorities)",
        ),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca).map_err(|e| tls_error(key, e))? {
        roots
            .add(cert.map_err(|e| tls_error(key, e))?)
            .map_err(|e| tls_error(key, e))?;
    }
    // The provider named: rustls is built with two (aws-lc-rs for this and the operator API's
    // TLS, ring for the command line's HTTP client), so there is no process default.
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| tls_error(key, e))?
    .with_root_certificates(roots);
    let cfg = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(k)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| tls_error("store.scylla.tls.cert_file", e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_error("store.scylla.tls.cert_file", e))?;
            let private = PrivateKeyDer::from_pem_file(k)
                .map_err(|e| tls_error("store.scylla.tls.key_file", e))?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| tls_error("store.scylla.tls.key_file", e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Some(Arc::new(cfg)))
}

/// The partitioner the producers of the orders topic use, as switchyard's own clients are
/// configured (`kafka.client.partitioner`).
pub(crate) fn orders_partitioner(config: &Config) -> Option<Partitioner> {
    Partitioner::of_librdkafka(config.kafka.client.get("partitioner").map(String::as_str))
}

/// For the load-test harness: the raw limit of the configured CQL cluster, measured in
/// `keyspace` (its migrations applied) for `duration` by a bare loop of audit-row inserts at the
/// store's own concurrency ([`ScyllaStore::raw_audit_inserts`]): rows per second and that
/// concurrency. `None` when the configured store is the embedded one.
#[doc(hidden)]
pub fn raw_cql_audit_limit(
    config: &Config,
    keyspace: &str,
    duration: Duration,
) -> Result<Option<(f64, usize)>, StoreError> {
    if config.store.backend != StoreBackend::Scylla {
        return Ok(None);
    }
    let mut o = scylla_options(config)?;
    o.keyspace = keyspace.to_string();
    let concurrency = o.max_in_flight;
    ScyllaStore::raw_audit_inserts(o, duration).map(|r| Some((r, concurrency)))
}

/// The ScyllaDB store's options from `[store.scylla]`.
pub(crate) fn scylla_options(config: &Config) -> Result<ScyllaOptions, StoreError> {
    use scylla::statement::Consistency;
    let s = &config.store.scylla;
    let replication = match s.replication {
        ReplicationStrategy::Simple => Replication::Simple(s.replication_factor),
        ReplicationStrategy::NetworkTopology => Replication::NetworkTopology(
            s.datacenters.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        ),
    };
    let consistency = match s.consistency {
        CqlConsistency::One => Consistency::One,
        CqlConsistency::LocalOne => Consistency::LocalOne,
        CqlConsistency::Quorum => Consistency::Quorum,
        CqlConsistency::LocalQuorum => Consistency::LocalQuorum,
        CqlConsistency::EachQuorum => Consistency::EachQuorum,
        CqlConsistency::All => Consistency::All,
    };
    Ok(ScyllaOptions {
        nodes: s
            .nodes
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect(),
        keyspace: s.keyspace.clone(),
        replication,
        local_datacenter: s.local_datacenter.clone(),
        consistency,
        credentials: s.username.clone().zip(s.password.clone()),
        tls: tls(config)?,
        request_timeout: Duration::from_millis(s.request_timeout_ms),
        connect_timeout: Duration::from_millis(s.connect_timeout_ms),
        audit_bucket_secs: s.audit_bucket_secs,
        audit_ttl_secs: s.audit_retention_secs,
        units: s.ownership_units,
        // Validated at load: a keyed partitioner.
        partitioner: orders_partitioner(config).unwrap_or(Partitioner::Crc32),
        max_in_flight: s.max_in_flight,
        migrate_at_start: s.migrate_at_start,
    })
}

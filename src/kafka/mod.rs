//! Kafka in and out, all through rdkafka (librdkafka). Every source runs the one loop in
//! [`source`] (batching, dead letters, offsets stored after the work, lost-record watch,
//! start-up gates, pausing) with its own handler: [`intake`] (orders topic), [`table_source`]
//! (compacted tables: meter registry, weather, emergencies), [`fact_source`] (payments,
//! certificates, approvals to meter actors), [`campaign_source`] (campaign definitions and
//! commands), [`results_source`] (head-end results). [`publisher`] sends the outbox to
//! order-events / exceptions; [`store_alarm`] raises the store-outage exception straight to
//! Kafka; [`dead_letter`] sizes and sends dead letters; [`embedded`] is
//! librdkafka's mock cluster for embedded mode.

pub(crate) mod campaign_source;
pub(crate) mod dead_letter;
pub(crate) mod embedded;
pub(crate) mod fact_source;
pub(crate) mod head_end_alarm;
pub(crate) mod intake;
pub(crate) mod meter_source;
pub(crate) mod publisher;
pub(crate) mod read_source;
pub(crate) mod results_source;
pub(crate) mod source;
pub(crate) mod store_alarm;
pub(crate) mod table_source;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;

use crate::config::Config;

pub use embedded::EmbeddedKafka;

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error(
        "cannot create Kafka client for {what}: {source}. Check kafka.brokers and kafka.client"
    )]
    Client {
        what: &'static str,
        source: rdkafka::error::KafkaError,
    },
    #[error("cannot start the embedded Kafka (librdkafka mock cluster): {0}")]
    Embedded(String),
    #[error("cannot create topic {topic}: {message}")]
    Topic { topic: String, message: String },
    #[error("the meter-keyed topics are not co-partitioned: {0}. Give orders, customer facts, control, campaign control, reads (and head-end results) the same partition count: a meter's or campaign's unit is its partition of each (docs/architecture.md, Scale out)")]
    NotCoPartitioned(String),
    #[error("cannot read the partition counts of the meter-keyed topics ({0}); check kafka.brokers and that the topics exist")]
    NoMetadata(String),
}

/// A client that only asks the cluster for metadata (and watermarks: a consumer that is
/// fetching answers a watermark query only after its fetch, up to `fetch.wait.max.ms`).
pub(crate) fn metadata_probe(
    config: &Config,
    bootstrap: &str,
) -> Result<rdkafka::consumer::BaseConsumer, KafkaSetupError> {
    client_config(config, bootstrap)
        .create()
        .map_err(|source| KafkaSetupError::Client {
            what: "metadata probe",
            source,
        })
}

/// The partition count the meter-keyed `topics` share (a meter's ownership unit is its
/// partition of each). Refuses topics with different counts, naming them; retries a broker
/// that does not answer yet for up to `wait`.
pub(crate) fn meter_partitions(
    config: &Config,
    bootstrap: &str,
    topics: &[String],
    wait: Duration,
) -> Result<u32, KafkaSetupError> {
    use rdkafka::consumer::Consumer;
    let probe = metadata_probe(config, bootstrap)?;
    let started = std::time::Instant::now();
    loop {
        let mut counts = Vec::new();
        let mut missing = None;
        for t in topics {
            match probe.fetch_metadata(Some(t), Duration::from_secs(5)) {
                Ok(md) => match md.topics().iter().find(|x| x.name() == t) {
                    Some(x) if x.error().is_none() && !x.partitions().is_empty() => {
                        counts.push((t.clone(), x.partitions().len() as u32))
                    }
                    _ => missing = Some(format!("topic {t} has no partitions yet")),
                },
                Err(e) => missing = Some(format!("{t}: {e}")),
            }
        }
        if missing.is_none() {
            let first = counts[0].1;
            if counts.iter().all(|(_, n)| *n == first) {
                return Ok(first);
            }
            let list: Vec<String> = counts.iter().map(|(t, n)| format!("{t} has {n}")).collect();
            return Err(KafkaSetupError::NotCoPartitioned(list.join(", ")));
        }
        if started.elapsed() >= wait {
            return Err(KafkaSetupError::NoMetadata(missing.unwrap_or_default()));
        }
        tracing::debug!(why = ?missing, "meter topics' metadata not there yet; retrying");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Common client settings: bootstrap servers plus the `[kafka.client]` extras.
pub fn client_config(config: &Config, bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c.set("client.id", "switchyard");
    for (k, v) in &config.kafka.client {
        c.set(k, v);
    }
    c
}

/// Notices records that were gone from a topic before switchyard read them: the next record
/// of a partition is past the expected offset (where the group left off, or the partition's
/// start) *and* the partition's first offset (low watermark) has moved past the expected one
/// (a gap with the low watermark behind it is compaction or transaction markers, not a loss).
/// Retention on a cluster, or the embedded Kafka's ~5 MB per partition under an unpaced burst,
/// lose records this way; they are counted in `switchyard_kafka_records_lost_total{topic}` and
/// logged, so that they can be replayed from their source.
///
/// Its broker calls are blocking but rare: the committed offset once per partition and run,
/// the low watermark at most once per partition every [`GapWatch::RECHECK`] (a transactional
/// producer leaves a one-offset gap, its commit marker, after every transaction).
#[derive(Default)]
pub(crate) struct GapWatch {
    /// Topic → partition → the next offset expected (looked up by `&str`: no allocation per
    /// record on the intake's path).
    next: std::collections::HashMap<String, std::collections::HashMap<i32, i64>>,
    /// The last low watermark fetched, and when.
    low: std::collections::HashMap<(String, i32), (i64, std::time::Instant)>,
}

impl GapWatch {
    const RECHECK: Duration = Duration::from_secs(5);

    pub(crate) fn observe<
        X: rdkafka::consumer::ConsumerContext,
        C: rdkafka::consumer::Consumer<X>,
    >(
        &mut self,
        consumer: &C,
        msg: &impl rdkafka::Message,
    ) {
        let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
        let known = self.next.get_mut(topic).and_then(|p| p.get_mut(&partition));
        if let Some(n) = known {
            let expected = *n;
            *n = offset + 1;
            if offset <= expected {
                return; // the common case: the next record, in order
            }
            self.gap(consumer, topic, partition, expected, offset);
            return;
        }
        let expected = {
            // The first record of this partition since start: where the group left off.
            let mut tpl = rdkafka::TopicPartitionList::new();
            tpl.add_partition(topic, partition);
            consumer
                .committed_offsets(tpl, Duration::from_secs(5))
                .ok()
                .and_then(|c| c.find_partition(topic, partition).map(|e| e.offset()))
                .and_then(|o| match o {
                    rdkafka::Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(0)
        };
        self.next
            .entry(topic.to_string())
            .or_default()
            .insert(partition, offset + 1);
        if offset > expected {
            self.gap(consumer, topic, partition, expected, offset);
        }
    }

    /// The record at `offset` came after `expected`: lost, if the partition's start moved past.
    fn gap<X: rdkafka::consumer::ConsumerContext, C: rdkafka::consumer::Consumer<X>>(
        &mut self,
        consumer: &C,
        topic: &str,
        partition: i32,
        expected: i64,
        offset: i64,
    ) {
        let key = (topic.to_string(), partition);
        let low = match self.low.get(&key) {
            Some((low, at)) if at.elapsed() < Self::RECHECK => *low,
            _ => {
                let Ok((low, _)) =
                    consumer.fetch_watermarks(topic, partition, Duration::from_secs(5))
                else {
                    return;
                };
                self.low.insert(key, (low, std::time::Instant::now()));
                low
            }
        };
        if low > expected {
            let lost = (low.min(offset) - expected) as u64;
            crate::observability::records_lost(topic, lost);
            tracing::warn!(
                topic,
                partition,
                from_offset = expected,
                to_offset = low.min(offset) - 1,
                lost,
                "records were removed from the topic before switchyard read them (retention, or the embedded Kafka's ~5 MB per partition): replay them from their source"
            );
        }
    }
}

/// How a source's consumer commits offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// The source stores an offset only once its work is durable; stored offsets are committed
    /// automatically (intake, meter facts).
    AfterWork,
    /// Never committed: tables replayed from the beginning at every start.
    Never,
}

/// What a source's consumer is: its group and how it commits. Each source module declares
/// its own as `CONSUMER` (the tables build theirs per table).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConsumerSpec<'a> {
    /// The group is `<kafka.group_id>` or `<kafka.group_id>-<suffix>`.
    pub(crate) group_suffix: Option<&'a str>,
    pub(crate) commit: Commit,
    /// What it is, for the error when it cannot be created.
    pub(crate) what: &'static str,
}

/// What hears of a group's rebalances, inside the consumer's poll (between two batches of
/// its source's loop): [`meter_source::Rebalancing`] for the meter consumer.
pub(crate) trait RebalanceListener: Send + Sync + 'static {
    fn revoking(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<SourceContext>,
        tpl: &TopicPartitionList,
    );
    fn assigned(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<SourceContext>,
        tpl: &TopicPartitionList,
    );
}

/// The context of every source's consumer: librdkafka's defaults, plus the rebalance listener
/// of a consumer that has one.
#[derive(Default, Clone)]
pub(crate) struct SourceContext {
    listener: Option<std::sync::Arc<dyn RebalanceListener>>,
}

impl rdkafka::ClientContext for SourceContext {}

impl rdkafka::consumer::ConsumerContext for SourceContext {
    fn pre_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        match (rebalance, &self.listener) {
            (rdkafka::consumer::Rebalance::Revoke(tpl), Some(l)) => l.revoking(consumer, tpl),
            (rdkafka::consumer::Rebalance::Error(e), _) => {
                tracing::warn!(error = %e, "consumer group rebalance error")
            }
            _ => {}
        }
    }

    fn post_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let (rdkafka::consumer::Rebalance::Assign(tpl), Some(l)) = (rebalance, &self.listener) {
            l.assigned(consumer, tpl);
        }
    }
}

/// Every source's consumer.
pub(crate) type SourceConsumer = rdkafka::consumer::StreamConsumer<SourceContext>;

/// The consumer `spec` describes.
pub(crate) fn consumer(
    config: &Config,
    bootstrap: &str,
    spec: &ConsumerSpec<'_>,
) -> Result<SourceConsumer, KafkaSetupError> {
    consumer_hearing(config, bootstrap, spec, None)
}

/// As [`consumer`], with `listener` told of every rebalance.
pub(crate) fn consumer_hearing(
    config: &Config,
    bootstrap: &str,
    spec: &ConsumerSpec<'_>,
    listener: Option<std::sync::Arc<dyn RebalanceListener>>,
) -> Result<SourceConsumer, KafkaSetupError> {
    let ConsumerSpec {
        group_suffix: suffix,
        commit,
        what,
    } = *spec;
    let mut c = client_config(config, bootstrap);
    let group = match suffix {
        Some(s) => format!("{}-{s}", config.kafka.group_id),
        None => config.kafka.group_id.clone(),
    };
    c.set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    // librdkafka postpones a partition's next fetch by this much once the consumer's queue is
    // over its thresholds (default 1,000 ms). Under a backlog that idles the source for most
    // of every second: the reads load test took 118,000 reads/s with the default and 411,000
    // with 1 ms, on a machine 87 % idle. (Unless `[kafka.client]` sets it.)
    if c.get("fetch.queue.backoff.ms").is_none() {
        c.set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
    }
    let session = config.kafka.session_timeout_ms;
    let group_member = |c: &mut ClientConfig| {
        c.set("session.timeout.ms", session.to_string())
            .set("heartbeat.interval.ms", (session / 3).min(3000).to_string())
            // Pinned, not left to defaults: the range assignor gives partition i of topics with
            // the same members and partition count to the same member (what co-partitioned
            // ownership needs, docs/architecture.md "Scale out"); the next consumer protocol
            // (KIP-848) ignores the client's assignor, and librdkafka's default will move to it.
            .set("partition.assignment.strategy", "range")
            .set("group.protocol", "classic");
        if let Some(id) = &config.kafka.instance_id {
            // The same name in each of switchyard's groups: unique per instance within a group.
            c.set("group.instance.id", id);
        }
    };
    match commit {
        Commit::AfterWork => {
            c.set("enable.auto.commit", "true")
                .set("auto.commit.interval.ms", "500")
                .set("enable.auto.offset.store", "false");
            group_member(&mut c);
        }
        Commit::Never => {
            c.set("enable.auto.commit", "false");
        }
    }
    c.create_with_context(SourceContext { listener })
        .map_err(|source| KafkaSetupError::Client { what, source })
}

/// See [`consumer_hearing`]: how long a full fetch queue postpones the next fetch.
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

pub fn producer_config(config: &Config, bootstrap: &str) -> ClientConfig {
    let mut c = client_config(config, bootstrap);
    // Dead letters are sized to fit this producer's limit.
    dead_letter::set_max_record_bytes(
        c.get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(dead_letter::DEFAULT_MAX_RECORD_BYTES),
    );
    c.set("linger.ms", "5");
    // Ordered, no duplicates from librdkafka's own retries (events of a meter stay in order).
    c.set("enable.idempotence", "true");
    c.set("message.timeout.ms", "30000");
    c.set("queue.buffering.max.messages", "1000000");
    c
}

/// Creates the topics switchyard uses that do not exist yet (where the broker allows it). A
/// broker that refuses is not fatal: the topics may be provisioned by the platform team.
pub async fn ensure_topics(config: &Config, bootstrap: &str) -> Result<(), KafkaSetupError> {
    use rdkafka::consumer::Consumer;
    let probe = metadata_probe(config, bootstrap)?;
    let existing: Vec<String> = match probe.fetch_metadata(None, Duration::from_secs(10)) {
        Ok(md) => md.topics().iter().map(|t| t.name().to_string()).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list topics; will try to create them");
            Vec::new()
        }
    };
    let missing: Vec<String> = config
        .topics
        .all()
        .iter()
        .map(|(_, t)| t.to_string())
        .filter(|t| !existing.contains(t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client_config(config, bootstrap)
        .create()
        .map_err(|source| KafkaSetupError::Client {
            what: "topic admin",
            source,
        })?;
    let topics: Vec<NewTopic> = missing
        .iter()
        .map(|t| {
            let nt = NewTopic::new(
                t,
                config.kafka.embedded_partitions,
                TopicReplication::Fixed(1),
            );
            if *t == config.topics.registry
                || *t == config.topics.weather
                || *t == config.topics.emergencies
            {
                nt.set("cleanup.policy", "compact")
            } else {
                nt
            }
        })
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    match admin.create_topics(&topics, &opts).await {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(topic) => tracing::info!(%topic, "topic created"),
                    Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                        tracing::debug!(%topic, "topic exists")
                    }
                    Err((topic, code)) => {
                        tracing::warn!(%topic, ?code, "could not create topic; assuming it is provisioned")
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, topics = ?missing, "could not create topics; assuming they are provisioned")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::FutureProducer;

    use crate::config::Config;

    /// A secured cluster (config/production-kafka.example.toml: SASL_SSL with SCRAM) needs a
    /// librdkafka built with OpenSSL: the clients of such a config are created, not refused
    /// with "not available at build time" (no broker is contacted here).
    #[tokio::test]
    async fn clients_for_a_sasl_ssl_cluster_can_be_created() {
        let config = Config::load_with_env(
            None,
            [
                ("SWITCHYARD__KAFKA__CLIENT__SECURITY_PROTOCOL", "SASL_SSL"),
                (
                    "SWITCHYARD__KAFKA__CLIENT__SASL_MECHANISMS",
                    "SCRAM-SHA-512",
                ),
                ("SWITCHYARD__KAFKA__CLIENT__SASL_USERNAME", "switchyard"),
                ("SWITCHYARD__KAFKA__CLIENT__SASL_PASSWORD", "secret"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .unwrap();
        let spec = super::ConsumerSpec {
            group_suffix: None,
            commit: super::Commit::AfterWork,
            what: "test consumer",
        };
        let _consumer =
            super::consumer(&config, "127.0.0.1:1", &spec).expect("a SASL_SSL consumer");
        let p: Result<FutureProducer, _> = super::producer_config(&config, "127.0.0.1:1").create();
        let _producer = p.expect("a SASL_SSL producer");
    }
}

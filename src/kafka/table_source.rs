//! Table sources: compacted topics read from the beginning on every start into an in-memory
//! table (the meter registry; zone facts: weather forecasts and declared emergencies). Each
//! signals when it has caught up with the high watermarks seen at start (the intake waits for
//! all of them, so no order meets a meter or a zone whose facts are merely not loaded yet), then
//! follows updates. Bad records are dead-lettered with the reason.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::OwnedMessage;
use rdkafka::Message;
use tokio::sync::watch;

use super::source::{Handled, Handler, Io, Rejected};
use crate::commit::StoreHandle;
use crate::domain::{DeadLetterReason, MeterRecord};
use crate::facts::{EmergencyRecord, FactBook, WeatherRecord};
use crate::meter::Directory;
use crate::observability::metrics;
use crate::registry::Registry;
use crate::store::{KeptRecord, WriteBatch};

/// An in-memory table fed by a compacted topic.
pub(crate) trait Table: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Applies one record (`None` payload = tombstone); an error is dead-lettered.
    fn apply(
        &self,
        key: Option<&str>,
        payload: Option<&[u8]>,
    ) -> Result<(), (DeadLetterReason, String)>;
    /// Entries held (for logs and gauges).
    fn len(&self) -> usize;
    fn publish_gauge(&self) {}
}

impl Table for Registry {
    fn name(&self) -> &'static str {
        "meter registry"
    }
    fn apply(
        &self,
        key: Option<&str>,
        payload: Option<&[u8]>,
    ) -> Result<(), (DeadLetterReason, String)> {
        let bad = |r: String| (DeadLetterReason::InvalidRegistryRecord, r);
        let Some(bytes) = payload else {
            if let Some(k) = key {
                self.remove(k);
            }
            return Ok(());
        };
        let r = serde_json::from_slice::<MeterRecord>(bytes)
            .map_err(|e| bad(format!("not a v1 meter record: {e}")))?;
        r.validate().map_err(bad)?;
        if let Some(k) = key {
            if k != r.meter_id {
                return Err(bad(format!(
                    "record key `{k}` differs from meter_id `{}`",
                    r.meter_id
                )));
            }
        }
        self.upsert(&r).map_err(|e| bad(e.to_string()))
    }
    fn len(&self) -> usize {
        Registry::len(self)
    }
    fn publish_gauge(&self) {
        metrics().registry_meters.set(Registry::len(self) as f64);
    }
}

/// A table in embedded mode: every record applied is also kept in the store (written in
/// batches by [`KeptTable::flush_every`]), because the embedded Kafka's topics do not survive a
/// restart; at the next start the kept records are applied again before the topic is read. For
/// the registry (a meter forgotten would have its orders wait), and for weather and emergencies
/// (a forgotten forecast or emergency would let a disconnect through that policy holds).
pub(crate) struct KeptTable {
    inner: Arc<dyn Table>,
    /// The table's name in the store.
    table: &'static str,
    pending: std::sync::Mutex<Vec<KeptRecord>>,
}

impl KeptTable {
    pub(crate) fn new(table: &'static str, inner: Arc<dyn Table>) -> Arc<KeptTable> {
        Arc::new(KeptTable {
            inner,
            table,
            pending: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Applies the records kept by an earlier run; returns how many.
    pub(crate) fn restore(&self, store: &StoreHandle) -> Result<usize, crate::store::StoreError> {
        let kept = store.store().kept(self.table)?;
        let mut n = 0;
        for (key, value) in &kept {
            match self.inner.apply(Some(key), Some(value)) {
                Ok(()) => n += 1,
                Err((_, e)) => {
                    tracing::warn!(table = self.table, key = %key, error = %e, "kept record not applied")
                }
            }
        }
        Ok(n)
    }

    /// Writes the records applied since the last flush, every `period`, until shutdown.
    pub(crate) async fn flush_every(
        self: Arc<Self>,
        store: StoreHandle,
        period: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let stop = tokio::select! {
                _ = tokio::time::sleep(period) => false,
                _ = shutdown.changed() => true,
            };
            let kept = std::mem::take(&mut *self.pending.lock().expect("lock"));
            if !kept.is_empty() {
                let mut backoff = Duration::from_millis(100);
                while let Err(e) = store
                    .write(WriteBatch {
                        kept: kept.clone(),
                        ..Default::default()
                    })
                    .await
                {
                    tracing::debug!(error = %e, table = self.table, "table records not kept yet; retrying");
                    if *shutdown.borrow() {
                        break;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            if stop {
                return;
            }
        }
    }
}

impl Table for KeptTable {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn apply(
        &self,
        key: Option<&str>,
        payload: Option<&[u8]>,
    ) -> Result<(), (DeadLetterReason, String)> {
        self.inner.apply(key, payload)?;
        // Table topics are keyed (a record without a key cannot be compacted either).
        if let Some(k) = key {
            self.pending.lock().expect("lock").push(KeptRecord {
                table: self.table,
                key: k.to_string(),
                value: payload.map(<[u8]>::to_vec),
            });
        }
        Ok(())
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn publish_gauge(&self) {
        self.inner.publish_gauge()
    }
}

/// Weather forecasts by zone; a change wakes the meters waiting in that zone.
pub(crate) struct WeatherTable {
    pub(crate) book: Arc<FactBook>,
    pub(crate) directory: Arc<Directory>,
}

impl Table for WeatherTable {
    fn name(&self) -> &'static str {
        "weather forecasts"
    }
    fn apply(
        &self,
        key: Option<&str>,
        payload: Option<&[u8]>,
    ) -> Result<(), (DeadLetterReason, String)> {
        let Some(bytes) = payload else {
            return Ok(()); // compaction tombstone: forecasts age out on their own
        };
        let r =
            WeatherRecord::parse(key, bytes).map_err(|e| (DeadLetterReason::InvalidFact, e.0))?;
        crate::observability::fact_received(crate::domain::FactType::Weather);
        self.book.upsert_forecast(&r);
        let woken = self.directory.wake_waiting(Some(&r.zone));
        tracing::debug!(zone = %r.zone, date = %r.date, woken, "forecast updated");
        Ok(())
    }
    fn len(&self) -> usize {
        0
    }
}

/// Declared emergencies; a change wakes every waiting meter of the zones it covers.
pub(crate) struct EmergencyTable {
    pub(crate) book: Arc<FactBook>,
    pub(crate) directory: Arc<Directory>,
}

impl Table for EmergencyTable {
    fn name(&self) -> &'static str {
        "declared emergencies"
    }
    fn apply(
        &self,
        key: Option<&str>,
        payload: Option<&[u8]>,
    ) -> Result<(), (DeadLetterReason, String)> {
        let Some(bytes) = payload else {
            if let Some(k) = key {
                self.book.upsert_emergency(k, None);
                self.directory.wake_waiting(None);
            }
            return Ok(());
        };
        let r =
            EmergencyRecord::parse(key, bytes).map_err(|e| (DeadLetterReason::InvalidFact, e.0))?;
        crate::observability::fact_received(crate::domain::FactType::Emergency);
        self.book.upsert_emergency(&r.emergency_id, Some(&r));
        // Every waiting meter: an update may have moved the emergency's zones (emergencies
        // are rare; the waiting index holds only meters with a deferred order).
        self.directory.wake_waiting(None);
        tracing::info!(emergency = %r.emergency_id, declared_at = %r.declared_at, ended_at = ?r.ended_at, "declared emergency updated");
        Ok(())
    }
    fn len(&self) -> usize {
        self.book.emergencies().len()
    }
}

/// Applies each record of a table topic to its table.
pub(crate) struct TableHandler {
    pub(crate) table: Arc<dyn Table>,
}

/// A consumer for one table topic; `suffix` names its group (`<group_id>-<suffix>`).
/// The consumer of table `suffix` (its own group; never committed: replayed at every start).
pub(crate) fn consumer_spec(suffix: &str) -> super::ConsumerSpec<'_> {
    super::ConsumerSpec {
        group_suffix: Some(suffix),
        commit: super::Commit::Never,
        what: "table consumer",
    }
}

/// The most records a table source takes in one batch (those already fetched).
pub(crate) const REPLAY_BATCH: usize = 4096;

/// From this many records a batch is applied on two threads.
const TWO_LANES_FROM: usize = 512;

impl TableHandler {
    /// Applies the records of `batch` whose partition falls in `lane` of `lanes`; returns
    /// the rejected ones (index in the batch). A key's records are all in one partition, so
    /// each key's records still apply in order.
    fn apply_lane(
        &self,
        batch: &[OwnedMessage],
        lane: usize,
        lanes: usize,
    ) -> Vec<(usize, Rejected)> {
        let m = metrics();
        let mut rejected = Vec::new();
        for (i, msg) in batch.iter().enumerate() {
            if msg.partition().unsigned_abs() as usize % lanes != lane {
                continue;
            }
            let key = msg.key().map(String::from_utf8_lossy);
            if let Err((why, reason)) = self.table.apply(key.as_deref(), msg.payload()) {
                if why == DeadLetterReason::InvalidRegistryRecord {
                    m.registry_rejected.increment(1);
                } else {
                    m.facts_rejected.increment(1);
                }
                rejected.push((i, Rejected::new(why, reason)));
            }
        }
        rejected
    }
}

impl Handler for TableHandler {
    fn name(&self) -> &str {
        self.table.name()
    }

    async fn handle(&self, batch: &[OwnedMessage], _io: &mut Io<'_>) -> Handled {
        // A replay's large batches use a second core (the table is concurrent: a dashmap and
        // interners behind locks); a live change is applied here.
        let mut rejected = if batch.len() >= TWO_LANES_FROM {
            std::thread::scope(|s| {
                let other = s.spawn(|| self.apply_lane(batch, 1, 2));
                let mut r = self.apply_lane(batch, 0, 2);
                r.extend(other.join().expect("table lane"));
                r
            })
        } else {
            self.apply_lane(batch, 0, 1)
        };
        rejected.sort_by_key(|(i, _)| *i);
        // Every change shows at once (a gauge set is cheap).
        self.table.publish_gauge();
        Handled::Done(rejected)
    }

    fn caught_up(&self, records: usize) {
        self.table.publish_gauge();
        tracing::info!(
            records,
            entries = self.table.len(),
            table = self.table.name(),
            "table caught up"
        );
    }
}

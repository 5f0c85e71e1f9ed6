//! The store boundary: everything switchyard must remember across a crash. Orders and their
//! status, the index of open orders, a snapshot per meter (switch state, open work, the command
//! in flight), commands and results, exceptions, the append-only audit trail, and the outbox of
//! events still to publish. One [`WriteBatch`] is applied atomically and durably; the
//! group-commit writer (`crate::commit`) groups many batches into one transaction.
//!
//! [`embedded::EmbeddedStore`] (redb, on disk) is the default; [`scylla::ScyllaStore`] is the
//! production store. Both pass the same contract (`contract`, run on each backend by
//! `tests/store_contract.rs`).

pub(crate) mod backlog;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod contract;
pub(crate) mod embedded;
pub(crate) mod scylla;
pub(crate) mod sharded;
pub(crate) mod wal;

use serde::{Deserialize, Serialize};

use crate::domain::MeterState;
use crate::domain::{
    AuditEvent, Command, CommandResult, ExceptionRecord, OrderRecord, OrderStatus, Timestamp,
};

pub use embedded::EmbeddedStore;
pub use scylla::ScyllaStore;
pub(crate) use scylla::{Replication, ScyllaOptions};
pub(crate) use sharded::ShardedStore;

/// The shard that holds a meter's rows, of `n`: FNV-1a of the meter id, which is stable across
/// versions and platforms (the assignment is on disk).
pub(crate) fn shard_of(meter_id: &str, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in meter_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % n as u64) as usize
}

/// An outbox entry's sequence number across `n` files: file `i`'s local number `l` is
/// `l * n + i`, so numbers never collide and keep each file's order.
pub(crate) fn global_seq(local: u64, shard: usize, n: usize) -> u64 {
    local * n as u64 + shard as u64
}

/// How a store's rows are spread over its files: `meters` meter shards (a meter's rows in
/// [`shard_of`] its id) and, with `control`, one more file after them for the campaigns and
/// the kept table records, so that a campaign's synchronous write (a release, stored before it
/// is sent) never waits behind the meters' group commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) meters: usize,
    pub(crate) control: bool,
}

impl Layout {
    pub(crate) fn files(self) -> usize {
        self.meters + usize::from(self.control)
    }

    /// The file of campaigns and kept records: the control file, or shard 0 without one.
    pub(crate) fn control_file(self) -> usize {
        if self.control {
            self.meters
        } else {
            0
        }
    }

    pub(crate) fn meter_file(self, meter_id: &str) -> usize {
        shard_of(meter_id, self.meters)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("embedded store at {path}: {message}. Check that the data_dir is writable and not used by another switchyard process")]
    Open { path: String, message: String },
    /// The ScyllaDB store could not be set up (connection, schema, settings).
    #[error("ScyllaDB store ({what}): {message}")]
    Setup { what: String, message: String },
    #[error("store I/O failed: {0}. Writes are refused until it works again; check disk space and permissions")]
    Backend(String),
    #[error("stored record {key} could not be decoded: {message}")]
    Corrupt { key: String, message: String },
    #[error("the store writer has stopped (shutting down)")]
    Closed,
}

/// A status change of an order, applied to its stored record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderUpdate {
    pub(crate) order_id: String,
    pub(crate) meter_id: String,
    pub(crate) status: OrderStatus,
    pub(crate) reason: Option<String>,
    pub(crate) at: Timestamp,
}

/// A record waiting in the outbox to be published to Kafka.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// Shared: with the configured topic's name, and for a meter's events with the meter's id
    /// (a copy of each per event was about 4 % of the order path's allocations).
    pub(crate) topic: std::sync::Arc<str>,
    pub(crate) key: std::sync::Arc<str>,
    #[serde(with = "payload_text")]
    pub payload: Vec<u8>,
}

/// An outbox payload in the write-ahead log's JSON (`wal::BATCHES` records): as a string when
/// it is UTF-8 (the events are JSON text), as an array of bytes otherwise.
mod payload_text {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(b) {
            Ok(t) => s.serialize_str(t),
            Err(_) => s.collect_seq(b),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
                Ok(v.as_bytes().to_vec())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }
}

impl OutboxMessage {
    pub fn new(topic: &str, key: &str, payload: Vec<u8>) -> OutboxMessage {
        OutboxMessage {
            topic: topic.into(),
            key: key.into(),
            payload,
        }
    }
}

/// An event waiting in the outbox for Kafka's acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// Its number: unique, and growing in write order for one key (a meter's events).
    pub(crate) seq: u64,
    /// The stored row that holds it, what the publisher acknowledges
    /// ([`WriteBatch::outbox_acked`]) once Kafka has every entry of the row. The embedded
    /// store packs all the entries of one transaction into one row (one B-tree insert and one
    /// delete per group commit instead of two per event); the ScyllaDB store keeps one row per
    /// entry (`packet == seq`).
    pub(crate) packet: u64,
    pub message: OutboxMessage,
}

/// A command and, once known, its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub command: std::sync::Arc<Command>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<CommandResult>,
}

/// Everything one step of intake or of a meter actor writes, applied atomically.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WriteBatch {
    /// New orders: stored and added to the open index (an id already stored is left as is).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub new_orders: Vec<OrderRecord>,
    /// Orders that ended (a terminal status). An open order's status changes are not written
    /// as updates: its meter's snapshot and audit rows (in the same batch) carry them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub order_updates: Vec<OrderUpdate>,
    /// Open orders a meter exchange carried away from this meter: `(meter_id, order_id)`,
    /// removed from that meter's open index (the order lives on at the new meter).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub carried_away: Vec<(String, String)>,
    /// Open orders carried to this meter by an exchange: the record is replaced (it names the
    /// new meter now, and the time it was carried) and the order joins the new meter's open
    /// index.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub carried_in: Vec<OrderRecord>,
    /// (Sharded embedded store only.) Records of orders carried to a meter that lives in
    /// another file: `(meter the record names now, order_id)`, removed from that meter's file.
    #[doc(hidden)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub carried_elsewhere: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meter: Option<MeterState>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<std::sync::Arc<Command>>,
    /// Answers to commands no longer in flight (a late or repeated answer): appended to the
    /// stored record, read back first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<CommandResult>,
    /// The whole record of a command answered while it was in flight: its command as sent
    /// (the meter holds it in flight, the very value its dispatch stored) and that first
    /// result. Written over the stored record, never read back first; a later answer to the
    /// same command (in this batch or after) goes to `results` and is appended.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub answered: Vec<CommandRecord>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<ExceptionRecord>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audit: Vec<AuditEvent>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<OutboxMessage>,
    /// Outbox rows whose entries Kafka has all acknowledged ([`OutboxEntry::packet`]):
    /// delete them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outbox_acked: Vec<u64>,
    /// Campaign definitions and where they stand (upsert).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub campaigns: Vec<crate::domain::CampaignRecord>,
    /// Orders joining a campaign: `(campaign_id, order)` (an order already listed is kept).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub campaign_orders: Vec<(String, crate::domain::CampaignOrder)>,
    /// Read watches set or cleared by this step (one meter's, a cut or its end).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub watches: Vec<crate::domain::WatchChange>,
    /// Releases: `(campaign_id, order_id, released_at)`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub campaign_releases: Vec<(String, String, Timestamp)>,
    /// Table records applied, kept in embedded mode: `(table, key, value)`, `None` = removed.
    /// (The control file's only: never in a logged record, `EmbeddedStore::log`.)
    #[serde(skip)]
    pub kept: Vec<KeptRecord>,
    /// The first of the sequence numbers reserved for this batch's audit rows and outbox
    /// entries ([`next_stamp`]), set before its first attempt so that a retry writes the same
    /// keys (the ScyllaDB store; the embedded store numbers rows in its transaction). 0 = not
    /// stamped: the store stamps it.
    #[doc(hidden)]
    pub stamp: u64,
}

/// Reserves `rows` (at least one) sequence numbers and returns the first. They grow with the
/// wall clock (nanoseconds since the epoch at the first call), so a restarted process goes on
/// above the numbers of the one before it.
pub(crate) fn next_stamp(rows: usize) -> u64 {
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU64> = std::sync::OnceLock::new();
    NEXT.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        std::sync::atomic::AtomicU64::new(now.max(1))
    })
    .fetch_add(rows.max(1) as u64, std::sync::atomic::Ordering::Relaxed)
}

impl WriteBatch {
    /// Splits the batch by file: every row goes where its meter lives (an outbox message where
    /// its key does, so a meter's events stay in order); campaign and kept table rows to the
    /// control file, and a campaign's step (its record or a release, with its events) whole
    /// there. Acknowledged outbox numbers go back to their file's local numbering. One file
    /// returns the batch as it is.
    pub(crate) fn split(self, layout: Layout) -> Vec<WriteBatch> {
        let n = layout.files();
        if n <= 1 {
            return vec![self];
        }
        let whole = |b: WriteBatch, i: usize| {
            let mut out: Vec<WriteBatch> = (0..n).map(|_| WriteBatch::default()).collect();
            out[i] = b;
            out
        };
        if let Some(i) = self.only_file(layout) {
            return whole(self, i);
        }
        let campaign_step = !(self.campaigns.is_empty() && self.campaign_releases.is_empty());
        let mut out: Vec<WriteBatch> = (0..n).map(|_| WriteBatch::default()).collect();
        let s = |meter: &str| layout.meter_file(meter);
        let ctl = layout.control_file();
        for o in self.new_orders {
            out[s(&o.order.meter_id)].new_orders.push(o);
        }
        for u in self.order_updates {
            out[s(&u.meter_id)].order_updates.push(u);
        }
        for (m, o) in self.carried_away {
            out[s(&m)].carried_away.push((m, o));
        }
        for r in self.carried_in {
            out[s(&r.order.meter_id)].carried_in.push(r);
        }
        for (m, o) in self.carried_elsewhere {
            out[s(&m)].carried_elsewhere.push((m, o));
        }
        if let Some(m) = self.meter {
            let i = s(&m.meter_id);
            out[i].meter = Some(m);
        }
        for c in self.commands {
            out[s(&c.meter_id)].commands.push(c);
        }
        for r in self.results {
            out[s(&r.meter_id)].results.push(r);
        }
        for a in self.answered {
            out[s(&a.command.meter_id)].answered.push(a);
        }
        for x in self.exceptions {
            out[s(&x.meter_id)].exceptions.push(x);
        }
        for w in self.watches {
            out[s(w.meter_id())].watches.push(w);
        }
        for a in self.audit {
            out[s(&a.meter_id)].audit.push(a);
        }
        for m in self.outbox {
            let i = if campaign_step { ctl } else { s(&m.key) };
            out[i].outbox.push(m);
        }
        for g in self.outbox_acked {
            out[(g % n as u64) as usize].outbox_acked.push(g / n as u64);
        }
        out[ctl].campaigns = self.campaigns;
        out[ctl].campaign_orders = self.campaign_orders;
        out[ctl].campaign_releases = self.campaign_releases;
        out[ctl].kept = self.kept;
        out
    }

    /// The meters the batch has rows of (with repeats).
    pub(crate) fn meter_ids(&self) -> impl Iterator<Item = &str> {
        self.new_orders
            .iter()
            .map(|o| o.order.meter_id.as_str())
            .chain(self.order_updates.iter().map(|u| u.meter_id.as_str()))
            .chain(self.carried_away.iter().map(|(m, _)| m.as_str()))
            .chain(self.carried_in.iter().map(|r| r.order.meter_id.as_str()))
            .chain(self.carried_elsewhere.iter().map(|(m, _)| m.as_str()))
            .chain(self.meter.iter().map(|m| &*m.meter_id))
            .chain(self.commands.iter().map(|c| c.meter_id.as_str()))
            .chain(self.results.iter().map(|r| r.meter_id.as_str()))
            .chain(self.answered.iter().map(|a| a.command.meter_id.as_str()))
            .chain(self.exceptions.iter().map(|x| x.meter_id.as_str()))
            .chain(self.watches.iter().map(|w| w.meter_id()))
            .chain(self.audit.iter().map(|a| a.meter_id.as_str()))
    }

    /// The one file every row of the batch goes to, if there is one, so that
    /// [`split`](Self::split) moves the batch whole: a meter's step (all its rows are its
    /// meter's), or a campaign's step (its record, releases and events).
    fn only_file(&self, layout: Layout) -> Option<usize> {
        let meter_rows = !(self.new_orders.is_empty()
            && self.order_updates.is_empty()
            && self.carried_away.is_empty()
            && self.carried_in.is_empty()
            && self.carried_elsewhere.is_empty()
            && self.meter.is_none()
            && self.commands.is_empty()
            && self.results.is_empty()
            && self.answered.is_empty()
            && self.exceptions.is_empty()
            && self.watches.is_empty()
            && self.audit.is_empty());
        if !self.outbox_acked.is_empty() {
            return None;
        }
        let table_rows = !(self.campaigns.is_empty()
            && self.campaign_orders.is_empty()
            && self.campaign_releases.is_empty()
            && self.kept.is_empty());
        if table_rows {
            return (!meter_rows).then(|| layout.control_file());
        }
        let mut keys = self.meter_ids().chain(self.outbox.iter().map(|m| &*m.key));
        let first = keys.next()?;
        let shard = layout.meter_file(first);
        // The same key again (the common case) needs no hashing.
        keys.all(|k| k == first || layout.meter_file(k) == shard)
            .then_some(shard)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.new_orders.is_empty()
            && self.order_updates.is_empty()
            && self.carried_away.is_empty()
            && self.carried_in.is_empty()
            && self.carried_elsewhere.is_empty()
            && self.meter.is_none()
            && self.commands.is_empty()
            && self.results.is_empty()
            && self.answered.is_empty()
            && self.exceptions.is_empty()
            && self.watches.is_empty()
            && self.audit.is_empty()
            && self.outbox.is_empty()
            && self.outbox_acked.is_empty()
            && self.campaigns.is_empty()
            && self.campaign_orders.is_empty()
            && self.campaign_releases.is_empty()
            && self.kept.is_empty()
    }
}

/// Where a page of the orders received in a period (newest first) stopped: the receipt instant
/// and id of its last order; the next page starts below it. Opaque to clients: the instant's
/// nanoseconds in 16 hex digits, then the order id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OrderCursor {
    pub(crate) received_ns: i64,
    pub(crate) order_id: String,
}

impl OrderCursor {
    /// The cursor after `rec` (its page ended with it).
    pub(crate) fn after(rec: &OrderRecord) -> OrderCursor {
        OrderCursor {
            received_ns: received_ns(rec.received_at),
            order_id: rec.order.order_id.clone(),
        }
    }

    /// The cursor whose next page starts with the orders received at `at`.
    pub(crate) fn at_or_before(at: Timestamp) -> OrderCursor {
        OrderCursor {
            received_ns: received_ns(at).saturating_add(1),
            order_id: String::new(),
        }
    }

    pub(crate) fn parse(s: &str) -> Option<OrderCursor> {
        if s.len() < 17 || !s.is_char_boundary(16) || s.as_bytes()[16] != b'.' {
            return None;
        }
        Some(OrderCursor {
            received_ns: u64::from_str_radix(&s[..16], 16).ok()? as i64,
            order_id: s[17..].to_string(),
        })
    }
}

impl std::fmt::Display for OrderCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}.{}", self.received_ns as u64, self.order_id)
    }
}

/// An order's receipt instant in nanoseconds since the epoch, as the orders-by-receipt index
/// keeps it (clamped to what an i64 holds: 1677 to 2262).
pub(crate) fn received_ns(t: Timestamp) -> i64 {
    t.as_nanosecond().clamp(0, i128::from(i64::MAX)) as i64
}

/// Where a page of a meter's audit trail (newest first) stopped: the next page starts below it.
/// Opaque to clients: 32 hex digits (the row's time and sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    pub(crate) at_ns: u64,
    pub(crate) seq: u64,
}

impl AuditCursor {
    /// The cursor whose next page starts with the rows written at `at` (every row at or before
    /// `at`, newest first).
    pub(crate) fn below_or_at(at: Timestamp) -> AuditCursor {
        let ns = at.as_nanosecond().clamp(0, i128::from(i64::MAX)) as u64;
        AuditCursor {
            at_ns: ns.saturating_add(1),
            seq: 0,
        }
    }

    pub(crate) fn parse(s: &str) -> Option<AuditCursor> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(AuditCursor {
            at_ns: u64::from_str_radix(&s[..16], 16).ok()?,
            seq: u64::from_str_radix(&s[16..], 16).ok()?,
        })
    }
}

impl std::fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}{:016x}", self.at_ns, self.seq)
    }
}

/// A record of a table topic (registry, weather, emergencies) as applied, kept by the store in
/// embedded mode, where the topics do not survive a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptRecord {
    pub(crate) table: &'static str,
    pub(crate) key: String,
    /// The record's value; `None` = removed (a tombstone).
    pub(crate) value: Option<Vec<u8>>,
}

/// A unit's lease (fencing, [`crate::lease`]): the instance that may write and command for
/// the unit's meters. `epoch` rises at every change of owner; `beat` at every renewal (an
/// owner that stops renewing is seen to have stopped: nobody compares wall clocks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitLease {
    pub(crate) epoch: i64,
    /// The instance id (`kafka.instance_id`); empty: released.
    pub(crate) owner: String,
    pub(crate) beat: i64,
}

/// Row counts, for tests, the operator API and load reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoreCounts {
    pub(crate) orders: u64,
    pub open_orders: u64,
    pub(crate) meters: u64,
    pub commands: u64,
    pub(crate) audit_events: u64,
    pub(crate) exceptions: u64,
    pub(crate) outbox: u64,
}

/// The store contract. `apply` must be atomic and durable when it returns.
pub trait Store: Send + Sync + 'static {
    /// Applies the batches in one atomic, durable transaction. Outbox messages get increasing
    /// sequence numbers; the stored entries are returned for publishing.
    fn apply(&self, batches: &[WriteBatch]) -> Result<Vec<OutboxEntry>, StoreError>;
    /// Housekeeping the group-commit writer runs after it has answered a round: the embedded
    /// store's checkpoint, when due (its write-ahead log). Nothing by default.
    fn checkpoint_if_due(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// (The embedded store's meter shards, `embedded.rs` "Logged, then applied".) Switches
    /// the file to writes that are durable once logged: [`log`](Self::log) appends them to
    /// the write-ahead log, and [`apply_logged`](Self::apply_logged), on a thread of its own,
    /// puts them in the file. `false`: this store does not (writes go through `apply`).
    #[doc(hidden)]
    fn begin_logging(&self) -> bool {
        false
    }
    /// Makes the batches durable in the log and queues them for the applier.
    #[doc(hidden)]
    fn log(&self, batches: Vec<WriteBatch>) -> Result<(), (StoreError, Vec<WriteBatch>)> {
        Err((
            StoreError::Backend("this store does not log batches".into()),
            batches,
        ))
    }
    /// Applies what is logged and not applied yet, waiting for some: the outbox entries it
    /// wrote; `None` once [`end_logging`](Self::end_logging) was called and nothing is left.
    #[doc(hidden)]
    fn apply_logged(&self) -> Option<Result<Vec<OutboxEntry>, StoreError>> {
        None
    }
    /// The logger has stopped: the applier drains and stops.
    #[doc(hidden)]
    fn end_logging(&self) {}
    fn order(&self, order_id: &str) -> Result<Option<OrderRecord>, StoreError>;
    /// For each id, whether an order with that id is stored.
    fn orders_exist(&self, order_ids: &[&str]) -> Result<Vec<bool>, StoreError>;
    fn meter(&self, meter_id: &str) -> Result<Option<MeterState>, StoreError>;
    /// Open (non-terminal) orders of one meter.
    fn open_orders(&self, meter_id: &str) -> Result<Vec<OrderRecord>, StoreError>;
    /// Meters with at least one open order or a command in flight (for recovery).
    fn meters_with_open_work(&self) -> Result<Vec<String>, StoreError>;
    /// The meters with open work whose ownership unit (their partition among `units` by
    /// `partitioner`) is one of `of`: what an instance that was assigned those units resumes.
    /// By default the whole scan, filtered; a store whose open work is indexed by the same
    /// units reads only theirs.
    fn meters_with_open_work_in(
        &self,
        of: &std::collections::BTreeSet<u32>,
        units: u32,
        partitioner: crate::domain::partition::Partitioner,
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .meters_with_open_work()?
            .into_iter()
            .filter(|m| of.contains(&partitioner.partition(m.as_bytes(), units)))
            .collect())
    }
    /// Every stored read watch (meters whose reads are watched after a cut).
    fn read_watches(&self) -> Result<Vec<crate::domain::ReadWatch>, StoreError>;
    /// The read watches of meters in the ownership units `of` (see
    /// [`meters_with_open_work_in`](Self::meters_with_open_work_in)): what an instance that
    /// was assigned those units watches. By default the whole table, filtered.
    fn read_watches_in(
        &self,
        of: &std::collections::BTreeSet<u32>,
        units: u32,
        partitioner: crate::domain::partition::Partitioner,
    ) -> Result<Vec<crate::domain::ReadWatch>, StoreError> {
        Ok(self
            .read_watches()?
            .into_iter()
            .filter(|w| of.contains(&partitioner.partition(w.meter_id.as_bytes(), units)))
            .collect())
    }
    /// Before a batch that carries orders in (a meter exchange) is split by file: a store that
    /// keeps an order's record in its meter's file drops carries of orders that ended
    /// meanwhile and names the old files' records to let go (`carried_elsewhere`). By default
    /// (one record per order wherever its meter is) nothing to do.
    fn prepare_carry(&self, _batch: &mut WriteBatch) -> Result<(), StoreError> {
        Ok(())
    }
    /// The lease of ownership unit `unit`, if one was ever taken. By default (a store only one
    /// process can use) none is kept and every swap succeeds.
    fn unit_lease(&self, _unit: u32) -> Result<Option<UnitLease>, StoreError> {
        Ok(None)
    }
    /// Compare-and-set: the unit's lease becomes `new` only if it is `expected` now (`None`: no
    /// lease row yet). Linearizable across instances (a lightweight transaction on ScyllaDB);
    /// `Ok(false)`: it was something else.
    fn swap_unit_lease(
        &self,
        _unit: u32,
        _expected: Option<&UnitLease>,
        _new: &UnitLease,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }
    fn command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError>;
    fn exception(&self, exception_id: &str) -> Result<Option<ExceptionRecord>, StoreError>;
    /// The audit trail of one meter, oldest first.
    fn audit(&self, meter_id: &str) -> Result<Vec<AuditEvent>, StoreError>;
    /// The audit rows of a meter written between `from` and `to` (inclusive), oldest first, at
    /// most `limit` (an order's own trail lies within its lifetime: this bounds the scan).
    fn audit_between(
        &self,
        meter_id: &str,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// One page of a meter's audit trail, newest first: up to `limit` rows older than `before`
    /// (of `order_id` only, when given), and the cursor of the next page when there are more.
    fn audit_page(
        &self,
        meter_id: &str,
        before: Option<&AuditCursor>,
        limit: usize,
        order_id: Option<&str>,
    ) -> Result<(Vec<AuditEvent>, Option<AuditCursor>), StoreError>;
    /// Outbox entries not yet acknowledged, oldest first.
    /// The outbox's entries, oldest first: at least `limit` when there are that many, and
    /// whole rows ([`OutboxEntry::packet`]), so that a caller who acknowledges a row once it
    /// has delivered the entries it got of it never deletes an entry it was not given.
    fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;
    fn counts(&self) -> Result<StoreCounts, StoreError>;
    /// The records kept for a table (embedded mode): `(key, value)` in key order.
    fn kept(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Orders received between `from` and `to` (inclusive), newest first (then by id,
    /// descending), below `before` (the cursor of the last order of the previous page), at
    /// most `limit`: the scan behind the operator API's order search. A final order has its
    /// final status; an open one the status it was received with (its meter's snapshot has
    /// the one it has now).
    fn orders_received(
        &self,
        from: Timestamp,
        to: Timestamp,
        before: Option<&OrderCursor>,
        limit: usize,
    ) -> Result<Vec<OrderRecord>, StoreError>;
    /// Exceptions in the store's order (by id, or by token on ScyllaDB) after the one named
    /// `after` (the last of the previous page), at most `limit`: the desk's task list.
    fn exceptions_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ExceptionRecord>, StoreError>;
    /// The task people keep on an exception, if anyone touched it.
    fn exception_task(
        &self,
        exception_id: &str,
        meter_id: &str,
    ) -> Result<Option<crate::domain::ExceptionTask>, StoreError>;
    /// Compare-and-set: stores `task` only if the stored task has version `expected` now (0:
    /// none stored yet). `Ok(false)`: someone changed it first.
    fn swap_exception_task(
        &self,
        expected: u64,
        task: &crate::domain::ExceptionTask,
    ) -> Result<bool, StoreError>;
    /// Every campaign stored.
    fn campaigns(&self) -> Result<Vec<crate::domain::CampaignRecord>, StoreError>;
    /// A campaign's orders, with `released` set from the releases stored.
    fn campaign_orders(
        &self,
        campaign_id: &str,
    ) -> Result<Vec<crate::domain::CampaignOrder>, StoreError>;
}

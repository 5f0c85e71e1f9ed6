//! The embedded default store: one redb database file under `data_dir`. redb is an ACID,
//! copy-on-write B-tree; a commit with `Durability::Immediate` is on disk when it returns, so a
//! `kill -9` loses nothing that was acknowledged. Chosen by a measured comparison with fjall
//! (docs/architecture.md, load-tests/store-selection).
//!
//! A file's writes are made durable by its write-ahead log (`wal.rs`). The meter shards under
//! the group-commit writer are *logged, then applied*: the writer answers once a round is in
//! the log, and an applier thread puts it in the file and checkpoints it, so that a checkpoint
//! holds no caller; reads wait for the writes they need (`backlog.rs`). Everything else (the
//! control file, a file used directly) applies each write in its own transaction, logged first.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::backlog::{self, Backlog, Keys};
use super::wal::{self, Op, Ops, Wal};
use super::{
    AuditCursor, CommandRecord, OutboxEntry, OutboxMessage, Store, StoreCounts, StoreError,
    WriteBatch,
};
use crate::domain::MeterState;
use crate::domain::{AuditEvent, ExceptionRecord, OrderRecord};

const ORDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("orders");
/// Format 4 and before: key `meter_id \0 order_id`, no value: the open orders of each meter
/// (in [`PER_METER`] since format 5; read only to upgrade a file and to replay an older log).
const OPEN: TableDefinition<&str, ()> = TableDefinition::new("open_orders");
/// Format 4 and before: meter id → snapshot (in [`PER_METER`] since format 5).
const METERS: TableDefinition<&str, &[u8]> = TableDefinition::new("meters");
/// Everything kept per meter that an order's steps rewrite, under one key prefix, so that a
/// meter's rows share a leaf page: an order dirties one random page here where it dirtied one
/// in each of three tables (measured: docs/design/next-store-cuts.md, plan C). Keys
/// `meter_id \0 kind [suffix]` ([`per_meter`]): the snapshot (JSON), each open order (the
/// order id as suffix, empty value) and the head of the audit chain (u64, little-endian).
const PER_METER: TableDefinition<&str, &[u8]> = TableDefinition::new("per_meter");
const COMMANDS: TableDefinition<&str, &[u8]> = TableDefinition::new("commands");
const EXCEPTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("exceptions");
/// The audit trail as an append-only journal. Every audit event has its number (the store's
/// sequence) and the number of the same meter's previous event (0 = none): a meter's trail is
/// the chain from its head, newest first. Since format 6 the events of one [`write_batches`]
/// call are numbered one after another and packed in one row under the first number
/// ([`AuditPacket`]): one insert per group commit at the right edge of the B-tree instead of
/// one per event (each insert rebuilt the rightmost leaf page: 7 % of a writer's time in a
/// month-end profile, docs/architecture.md). A row written before (format 5 and older) holds
/// one event: its predecessor's number (8 bytes, big-endian, first byte always 0) and its JSON;
/// such rows are still read ([`audit_entry`]).
const AUDIT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_log");
/// Format 4 and before: meter id → sequence number of its newest audit row (the head of its
/// chain; in [`PER_METER`] since format 5).
const AUDIT_HEAD: TableDefinition<&str, u64> = TableDefinition::new("audit_head");
/// The audit layout of store format 1 (one row per `meter \0 time seq` key): a file that
/// still has rows in it was written by an older switchyard.
const AUDIT_V1: TableDefinition<&[u8], &[u8]> = TableDefinition::new("audit");
/// The store format this version writes, kept in `META` under `format` (2: the audit journal;
/// 3: campaigns and kept records in the control file of a sharded store; 4: outbox entries
/// packed in rows, [`Packet`]; 5: a meter's snapshot, open orders and audit head in
/// [`PER_METER`]; 6: audit events packed in rows, [`AuditPacket`]). A file of format 3 or 4 is
/// upgraded when opened (its rows copied into `PER_METER`; outbox rows of one entry are still
/// read); one of format 5 only changes its number (its one-event audit rows are still read); an
/// older switchyard then refuses it by name.
const FORMAT: u64 = 6;
/// The older formats this version opens and upgrades.
const FORMAT_UPGRADED: [u64; 3] = [3, 4, 5];
/// `META` key: how many audit events there are beyond one per `AUDIT_LOG` row (a packed row
/// holds several), so that `counts` needs no scan.
const AUDIT_EXTRA: &str = "audit_extra";
/// `META` keys: how many meters have a snapshot and how many orders are open (`counts`; a
/// count of `PER_METER` by kind would be a scan).
const METERS_COUNT: &str = "meters";
const OPEN_COUNT: &str = "open_orders";
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `META` key: the number of the last write-ahead log record the file includes.
const WAL_LSN: &str = "wal_lsn";
/// campaign id → campaign record.
const CAMPAIGNS: TableDefinition<&str, &[u8]> = TableDefinition::new("campaigns");
/// `campaign\0order` → campaign order.
const CAMPAIGN_ORDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("campaign_orders");
/// `campaign\0order` → release time (nanoseconds since the epoch).
const CAMPAIGN_RELEASES: TableDefinition<&str, i64> = TableDefinition::new("campaign_releases");
/// `table \0 key` → the record applied from a table topic (registry, weather, emergencies):
/// embedded mode keeps them, because the embedded Kafka's topics do not survive a restart.
const KEPT: TableDefinition<&str, &[u8]> = TableDefinition::new("kept_tables");
/// `(received_ns, order_id)`, no value: the orders by receipt instant (the order search's
/// scan). Built from the orders at the first open of a file written before it existed.
const ORDERS_BY_RECEIPT: TableDefinition<(i64, &str), ()> =
    TableDefinition::new("orders_by_receipt");
/// exception id → the task people keep on it (JSON, with its version).
const EXCEPTION_TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("exception_tasks");
/// Meters whose reads are watched (a cut): meter id → `ReadWatch` JSON.
const READ_WATCH: TableDefinition<&str, &[u8]> = TableDefinition::new("read_watch");

/// The numbers of the tables a write transaction changes, as the write-ahead log names them
/// (never renumber one: a log written by one version is replayed by the next).
mod table_id {
    pub(super) const ORDERS: u8 = 1;
    pub(super) const OPEN: u8 = 2;
    pub(super) const METERS: u8 = 3;
    pub(super) const COMMANDS: u8 = 4;
    pub(super) const EXCEPTIONS: u8 = 5;
    pub(super) const AUDIT_LOG: u8 = 6;
    pub(super) const AUDIT_HEAD: u8 = 7;
    pub(super) const OUTBOX: u8 = 8;
    pub(super) const CAMPAIGNS: u8 = 9;
    pub(super) const CAMPAIGN_ORDERS: u8 = 10;
    pub(super) const CAMPAIGN_RELEASES: u8 = 11;
    pub(super) const KEPT: u8 = 12;
    pub(super) const ORDERS_BY_RECEIPT: u8 = 13;
    pub(super) const READ_WATCH: u8 = 14;
    pub(super) const META: u8 = 15;
    pub(super) const PER_METER: u8 = 16;
}

/// Keys of [`PER_METER`]: `meter_id \0 kind [suffix]`.
mod per_meter {
    const SNAPSHOT: char = '\u{1}';
    const OPEN: char = '\u{2}';
    const HEAD: char = '\u{3}';

    pub(super) fn snapshot(meter: &str) -> String {
        format!("{meter}\0{SNAPSHOT}")
    }
    pub(super) fn open(meter: &str, order: &str) -> String {
        format!("{meter}\0{OPEN}{order}")
    }
    /// The range of a meter's open orders; the order id follows `lo`.
    pub(super) fn open_range(meter: &str) -> (String, String) {
        (format!("{meter}\0{OPEN}"), format!("{meter}\0{HEAD}"))
    }
    pub(super) fn head(meter: &str) -> String {
        format!("{meter}\0{HEAD}")
    }

    /// What a key names (with its meter, where a scan needs it).
    pub(super) enum Row<'k> {
        Snapshot(&'k str),
        Open(&'k str),
        Head,
        Other,
    }

    pub(super) fn parse(key: &str) -> Row<'_> {
        let Some((meter, rest)) = key.split_once('\0') else {
            return Row::Other;
        };
        match rest.chars().next() {
            Some(SNAPSHOT) => Row::Snapshot(meter),
            Some(OPEN) => Row::Open(meter),
            Some(HEAD) => Row::Head,
            _ => Row::Other,
        }
    }

    /// A head's value.
    pub(super) fn head_value(seq: u64) -> [u8; 8] {
        seq.to_le_bytes()
    }
    /// A head's value read back: anything but eight bytes is a damaged row, never "no chain"
    /// (a write would then start the meter's trail again and orphan its history).
    pub(super) fn head_of(meter: &str, v: &[u8]) -> Result<u64, super::StoreError> {
        v.try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| super::StoreError::Corrupt {
                key: format!("per_meter/{meter}/audit head"),
                message: format!("an audit head of {} bytes, not 8", v.len()),
            })
    }
}

/// A table of a write transaction whose inserts and removes are also recorded for the
/// write-ahead log (`ops` is `None` for a file without one). Reads go to the table itself.
struct Logged<'t, 'o, K: redb::Key + 'static, V: redb::Value + 'static> {
    table: redb::Table<'t, K, V>,
    id: u8,
    ops: Option<&'o std::cell::RefCell<Ops>>,
}

impl<'t, K: redb::Key + 'static, V: redb::Value + 'static> std::ops::Deref
    for Logged<'t, '_, K, V>
{
    type Target = redb::Table<'t, K, V>;

    fn deref(&self) -> &Self::Target {
        &self.table
    }
}

impl<K: redb::Key + 'static, V: redb::Value + 'static> Logged<'_, '_, K, V> {
    fn insert<'k, 'v>(
        &mut self,
        key: impl std::borrow::Borrow<K::SelfType<'k>>,
        value: impl std::borrow::Borrow<V::SelfType<'v>>,
    ) -> Result<bool, redb::StorageError> {
        let (key, value) = (key.borrow(), value.borrow());
        if let Some(ops) = self.ops {
            ops.borrow_mut().insert(
                self.id,
                K::as_bytes(key).as_ref(),
                V::as_bytes(value).as_ref(),
            );
        }
        // Whether it replaced a value.
        self.table.insert(key, value).map(|old| old.is_some())
    }

    fn remove<'k>(
        &mut self,
        key: impl std::borrow::Borrow<K::SelfType<'k>>,
    ) -> Result<bool, redb::StorageError> {
        let key = key.borrow();
        if let Some(ops) = self.ops {
            ops.borrow_mut().remove(self.id, K::as_bytes(key).as_ref());
        }
        // Whether there was a value.
        self.table.remove(key).map(|old| old.is_some())
    }
}

fn logged<'t, 'o, K: redb::Key + 'static, V: redb::Value + 'static>(
    w: &'t redb::WriteTransaction,
    def: TableDefinition<K, V>,
    id: u8,
    ops: Option<&'o std::cell::RefCell<Ops>>,
) -> Result<Logged<'t, 'o, K, V>, StoreError> {
    Ok(Logged {
        table: w.open_table(def).map_err(be)?,
        id,
        ops,
    })
}

/// Applies one change read back from the write-ahead log.
fn replay(w: &redb::WriteTransaction, op: &Op<'_>) -> Result<(), StoreError> {
    fn on<K: redb::Key + 'static, V: redb::Value + 'static>(
        w: &redb::WriteTransaction,
        def: TableDefinition<K, V>,
        op: &Op<'_>,
    ) -> Result<(), StoreError> {
        let mut t = w.open_table(def).map_err(be)?;
        match *op {
            Op::Insert { key, value, .. } => {
                t.insert(K::from_bytes(key), V::from_bytes(value))
                    .map_err(be)?;
            }
            Op::Remove { key, .. } => {
                t.remove(K::from_bytes(key)).map_err(be)?;
            }
        }
        Ok(())
    }
    let table = match *op {
        Op::Insert { table, .. } | Op::Remove { table, .. } => table,
    };
    match table {
        table_id::ORDERS => on(w, ORDERS, op),
        table_id::OPEN | table_id::METERS | table_id::AUDIT_HEAD => replay_per_meter(w, op),
        table_id::PER_METER => on(w, PER_METER, op),
        table_id::COMMANDS => on(w, COMMANDS, op),
        table_id::EXCEPTIONS => on(w, EXCEPTIONS, op),
        table_id::AUDIT_LOG => on(w, AUDIT_LOG, op),
        table_id::OUTBOX => on(w, OUTBOX, op),
        table_id::CAMPAIGNS => on(w, CAMPAIGNS, op),
        table_id::CAMPAIGN_ORDERS => on(w, CAMPAIGN_ORDERS, op),
        table_id::CAMPAIGN_RELEASES => on(w, CAMPAIGN_RELEASES, op),
        table_id::KEPT => on(w, KEPT, op),
        table_id::ORDERS_BY_RECEIPT => on(w, ORDERS_BY_RECEIPT, op),
        table_id::READ_WATCH => on(w, READ_WATCH, op),
        table_id::META => on(w, META, op),
        other => Err(StoreError::Corrupt {
            key: "write-ahead log".into(),
            message: format!("a change names table {other}, which this version does not know"),
        }),
    }
}

/// A change a log of format 4 or before made to a table that is in [`PER_METER`] since format 5
/// (a log written before the file was upgraded, replayed after it): the same change under its
/// new key, counted in `META` as `write_batches` counts it.
fn replay_per_meter(w: &redb::WriteTransaction, op: &Op<'_>) -> Result<(), StoreError> {
    let (table, key) = match *op {
        Op::Insert { table, key, .. } | Op::Remove { table, key, .. } => (table, key),
    };
    let corrupt = || StoreError::Corrupt {
        key: "write-ahead log".into(),
        message: format!("a change of table {table} has a key that is not a meter's"),
    };
    let key = std::str::from_utf8(key).map_err(|_| corrupt())?;
    let (new_key, counter) = match table {
        table_id::OPEN => {
            let (meter, order) = key.split_once('\0').ok_or_else(corrupt)?;
            (per_meter::open(meter, order), Some(OPEN_COUNT))
        }
        table_id::METERS => (per_meter::snapshot(key), Some(METERS_COUNT)),
        _ => (per_meter::head(key), None),
    };
    let delta: i64 = {
        let mut t = w.open_table(PER_METER).map_err(be)?;
        match *op {
            Op::Insert { value, .. } => {
                // (An open order's value is empty, a head's the same eight bytes.)
                let value = if table == table_id::OPEN {
                    &[][..]
                } else {
                    if table == table_id::AUDIT_HEAD {
                        per_meter::head_of(key, value)?;
                    }
                    value
                };
                let old = t.insert(new_key.as_str(), value).map_err(be)?;
                i64::from(old.is_none())
            }
            Op::Remove { .. } => {
                let old = t.remove(new_key.as_str()).map_err(be)?;
                -i64::from(old.is_some())
            }
        }
    };
    if let (Some(counter), true) = (counter, delta != 0) {
        let mut meta = w.open_table(META).map_err(be)?;
        let n = meta.get(counter).map_err(be)?.map_or(0, |v| v.value());
        meta.insert(counter, n.saturating_add_signed(delta))
            .map_err(be)?;
    }
    Ok(())
}

/// The upgrade from format 4 (or 3): copies the snapshots, open orders and audit heads into
/// [`PER_METER`] and deletes their old tables. Returns how many snapshots and open orders there
/// are. One pass over each table in its key order (table after table, not merged by meter), at
/// the first open by this version.
fn move_into_per_meter(w: &redb::WriteTransaction, path: &Path) -> Result<(u64, u64), StoreError> {
    let started = std::time::Instant::now();
    let (mut meters, mut open) = (0u64, 0u64);
    {
        let mut pm = w.open_table(PER_METER).map_err(be)?;
        let old = w.open_table(METERS).map_err(be)?;
        for item in old.iter().map_err(be)? {
            let (k, v) = item.map_err(be)?;
            pm.insert(per_meter::snapshot(k.value()).as_str(), v.value())
                .map_err(be)?;
            meters += 1;
        }
        let old = w.open_table(OPEN).map_err(be)?;
        for item in old.iter().map_err(be)? {
            let (k, _) = item.map_err(be)?;
            let key = k.value();
            let (meter, order) = key.split_once('\0').ok_or_else(|| StoreError::Corrupt {
                key: format!("open_orders/{key}"),
                message: "an open order's key names no meter".into(),
            })?;
            pm.insert(per_meter::open(meter, order).as_str(), &[][..])
                .map_err(be)?;
            open += 1;
        }
        let old = w.open_table(AUDIT_HEAD).map_err(be)?;
        for item in old.iter().map_err(be)? {
            let (k, v) = item.map_err(be)?;
            pm.insert(
                per_meter::head(k.value()).as_str(),
                &per_meter::head_value(v.value())[..],
            )
            .map_err(be)?;
        }
    }
    w.delete_table(METERS).map_err(be)?;
    w.delete_table(OPEN).map_err(be)?;
    w.delete_table(AUDIT_HEAD).map_err(be)?;
    tracing::info!(file = %path.display(), meters, open_orders = open, secs = started.elapsed().as_secs_f64(), "store file upgraded to format {FORMAT}: a meter's snapshot, open orders and audit head now share its key prefix");
    Ok((meters, open))
}

/// Which file of a sharded store (`crate::store::ShardedStore`) to open: shard `index` of `of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shard {
    pub(crate) index: u64,
    pub(crate) of: u64,
}

impl Shard {
    pub(crate) const ONLY: Shard = Shard { index: 0, of: 1 };

    /// The control file of a store of `of` shards (campaigns and kept table records).
    pub(crate) fn control(of: u64) -> Shard {
        Shard { index: of, of }
    }

    /// Shard 0 keeps the historical name, `switchyard.redb`; shard `i` is `switchyard-<i>.redb`;
    /// the control file is `switchyard-control.redb`.
    pub(crate) fn file_name(&self) -> String {
        if self.index == 0 {
            "switchyard.redb".into()
        } else if self.index == self.of {
            "switchyard-control.redb".into()
        } else {
            format!("switchyard-{}.redb", self.index)
        }
    }
}

pub struct EmbeddedStore {
    path: std::path::PathBuf,
    /// How many shards the file belongs to (checked against the file at every open).
    shards: u64,
    /// redb's page cache for this file (`store.cache_mib` over the files).
    cache_bytes: usize,
    /// `None` while it is being reopened after an I/O error (reads fail meanwhile).
    db: std::sync::RwLock<Option<Database>>,
    /// A write failed: redb refuses every later write ("previous I/O error") until the
    /// database is opened again, which the next write attempts (at most once a second).
    broken: std::sync::atomic::AtomicBool,
    last_reopen: std::sync::Mutex<Option<std::time::Instant>>,
    /// Unit leases: in memory, as one process holds the file (the lock of the database) and
    /// so is the only instance there can be.
    leases: std::sync::Mutex<std::collections::HashMap<u32, super::UnitLease>>,
    /// The file's write-ahead log (`store.wal`); `None`: every commit is synced by redb.
    wal: Option<std::sync::Mutex<Wal>>,
    /// Set when the file's writes are logged, then applied ("Logged, then applied" below):
    /// what is logged and not applied yet.
    backlog: std::sync::OnceLock<Backlog>,
}

/// How long a read waits for the applier to put in the file what it needs before it fails.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A write transaction whose commit redb syncs itself (a checkpoint, the replay at open, a
/// large round, a file without a log): it records redb's allocator state with the commit
/// (redb's *quick repair*, which also makes the commit two-phase). The open after a `kill -9`
/// then loads that state instead of walking and checksumming the whole file to rebuild it
/// (3.3 s of the 9.8 s recovery of 1M open orders, measured). Unsynced commits (the log
/// makes them durable) do not record it: the open after a crash starts from the last synced
/// commit, which has.
fn begin_synced(db: &Database) -> Result<redb::WriteTransaction, StoreError> {
    let mut w = db.begin_write().map_err(be)?;
    w.set_quick_repair(true);
    Ok(w)
}

fn be(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        message: e.to_string(),
    })
}

/// Whether a stored meter snapshot has work (an open order or a command in flight, as
/// `MeterState::is_idle` says), read without building the snapshot: the open-work scan at
/// start-up reads every meter's, and a whole `MeterState` (its strings, reads and
/// certificates) is most of that scan's time.
fn snapshot_has_work(meter: &str, bytes: &[u8]) -> Result<bool, StoreError> {
    #[derive(serde::Deserialize)]
    struct Work {
        open: Vec<serde::de::IgnoredAny>,
        #[serde(default)]
        in_flight: Option<serde::de::IgnoredAny>,
    }
    let w: Work = decode(meter, bytes)?;
    Ok(!w.open.is_empty() || w.in_flight.is_some())
}

/// The time of the audit event numbered `seq` (a meter's chain head; 0 = none).
fn head_at(
    log: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
) -> Result<Option<jiff::Timestamp>, StoreError> {
    #[derive(serde::Deserialize)]
    struct At {
        at: jiff::Timestamp,
    }
    if seq == 0 {
        return Ok(None);
    }
    audit_entry(log, seq, |e| match e.at_ns {
        Some(ns) => {
            jiff::Timestamp::from_nanosecond(i128::from(ns)).map_err(|e| StoreError::Corrupt {
                key: format!("audit/{seq}"),
                message: format!("an audit event's time is out of range: {e}"),
            })
        }
        None => Ok(decode::<At>(&format!("audit/{seq}"), e.json)?.at),
    })
}

/// The first byte of an audit row that packs several events ([`AuditPacket`]). A row of one
/// event (format 5 and before, still read) starts with its predecessor's number, a big-endian
/// `u64` whose first byte is 0 (numbers count rows from 1).
const AUDIT_PACKED: u8 = 0xA6;
/// A packed row's header: [`AUDIT_PACKED`] and the number of events (`u32`).
const AUDIT_PACKED_HEAD: usize = 5;
/// Per event in a packed row's header: its predecessor (`u64`), its time in nanoseconds
/// (`i64`), the end of its JSON in the row's body (`u32`).
const AUDIT_PACKED_ENTRY: usize = 20;
/// At most this many events in one packed row, so that reading one event of a trail loads at
/// most about 20 KB (a round of a month-end burst holds thousands of events; a row per 64
/// of them is still a few dozen inserts a round instead of thousands).
const AUDIT_PACKED_MAX: usize = 64;

/// One audit event as stored.
struct AuditEntry<'r> {
    /// The number of the same meter's previous event (0 = none).
    prev: u64,
    /// Its time as stored in a packed row's header (`None`: a one-event row, whose time is
    /// in its JSON).
    at_ns: Option<i64>,
    json: &'r [u8],
}

/// Looks up the audit event numbered `seq` (in a packed row under a number at or below it, or
/// a one-event row under its own) and hands it to `f`; `None` when no event has that number.
fn audit_entry<T>(
    log: &impl ReadableTable<u64, &'static [u8]>,
    seq: u64,
    f: impl FnOnce(AuditEntry<'_>) -> Result<T, StoreError>,
) -> Result<Option<T>, StoreError> {
    let Some(item) = log.range(..=seq).map_err(be)?.next_back() else {
        return Ok(None);
    };
    let (k, v) = item.map_err(be)?;
    let (row, b) = (k.value(), v.value());
    let corrupt = |what: &str| StoreError::Corrupt {
        key: format!("audit/{row}"),
        message: format!("{what}: the audit row is damaged; restore the store file from a backup"),
    };
    // A predecessor is always an older event: one that is not would send a chain's reader
    // round in a loop.
    let checked = |prev: u64| {
        if prev >= seq {
            Err(corrupt(&format!(
                "event {seq} names {prev} as its predecessor"
            )))
        } else {
            Ok(prev)
        }
    };
    if b.first() != Some(&AUDIT_PACKED) {
        if row != seq {
            return Ok(None);
        }
        let prev = b.get(..8).ok_or_else(|| corrupt("truncated audit row"))?;
        return f(AuditEntry {
            prev: checked(u64::from_be_bytes(prev.try_into().expect("8 bytes")))?,
            at_ns: None,
            json: &b[8..],
        })
        .map(Some);
    }
    let n = b
        .get(1..AUDIT_PACKED_HEAD)
        .map(|x| u32::from_be_bytes(x.try_into().expect("4 bytes")) as u64)
        .ok_or_else(|| corrupt("truncated packed audit row"))?;
    if n > ((b.len() - AUDIT_PACKED_HEAD) / AUDIT_PACKED_ENTRY) as u64 {
        return Err(corrupt(
            "a packed audit row counts more events than it holds",
        ));
    }
    let i = seq - row;
    if i >= n {
        return Ok(None);
    }
    let body = AUDIT_PACKED_HEAD + n as usize * AUDIT_PACKED_ENTRY;
    let entry = |i: u64| {
        let at = AUDIT_PACKED_HEAD + i as usize * AUDIT_PACKED_ENTRY;
        b.get(at..at + AUDIT_PACKED_ENTRY)
            .ok_or_else(|| corrupt("truncated packed audit row"))
    };
    let e = entry(i)?;
    let end = u32::from_be_bytes(e[16..20].try_into().expect("4 bytes")) as usize;
    let start = if i == 0 {
        0
    } else {
        u32::from_be_bytes(entry(i - 1)?[16..20].try_into().expect("4 bytes")) as usize
    };
    let json = b
        .get(body + start..body + end)
        .filter(|_| start <= end)
        .ok_or_else(|| corrupt("an event of a packed audit row lies outside it"))?;
    f(AuditEntry {
        prev: checked(u64::from_be_bytes(e[..8].try_into().expect("8 bytes")))?,
        at_ns: Some(i64::from_be_bytes(e[8..16].try_into().expect("8 bytes"))),
        json,
    })
    .map(Some)
}

/// The audit events of one [`write_batches`] call (at most [`AUDIT_PACKED_MAX`]), numbered
/// one after another from `first`, as one row: [`AUDIT_PACKED`], the number of events
/// (`u32`), for each its predecessor (`u64`), time (`i64`, ns) and the end of its JSON in the
/// body (`u32`), all big-endian; then the body, the events' JSON one after another.
#[derive(Default)]
struct AuditPacket {
    first: u64,
    heads: Vec<u8>,
    body: Vec<u8>,
    n: usize,
}

impl AuditPacket {
    /// Adds the event numbered `first + n`.
    fn add(&mut self, seq: u64, prev: u64, at: jiff::Timestamp, a: &AuditEvent) {
        if self.n == 0 {
            self.first = seq;
        }
        debug_assert_eq!(
            seq,
            self.first + self.n as u64,
            "numbered one after another"
        );
        serde_json::to_writer(&mut self.body, a).expect("domain types serialize");
        self.heads.extend_from_slice(&prev.to_be_bytes());
        self.heads
            .extend_from_slice(&super::received_ns(at).to_be_bytes());
        self.heads
            .extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        self.n += 1;
    }

    /// Writes the row (if it has events) and empties the packet; returns how many events it
    /// held.
    fn write(&mut self, log: &mut Logged<'_, '_, u64, &'static [u8]>) -> Result<usize, StoreError> {
        let n = std::mem::take(&mut self.n);
        if n == 0 {
            return Ok(0);
        }
        let mut row = Vec::with_capacity(AUDIT_PACKED_HEAD + self.heads.len() + self.body.len());
        row.push(AUDIT_PACKED);
        row.extend_from_slice(&(n as u32).to_be_bytes());
        row.extend_from_slice(&self.heads);
        row.extend_from_slice(&self.body);
        log.insert(self.first, row.as_slice()).map_err(be)?;
        self.heads.clear();
        self.body.clear();
        Ok(n)
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("domain types serialize")
}

fn open_key(meter: &str, order: &str) -> String {
    format!("{meter}\0{order}")
}

/// One outbox entry's encoding: topic and key, each after its length (`u32`, big-endian),
/// then the payload.
fn encode_outbox_into(v: &mut Vec<u8>, m: &OutboxMessage) {
    v.extend_from_slice(&(m.topic.len() as u32).to_be_bytes());
    v.extend_from_slice(m.topic.as_bytes());
    v.extend_from_slice(&(m.key.len() as u32).to_be_bytes());
    v.extend_from_slice(m.key.as_bytes());
    v.extend_from_slice(&m.payload);
}

/// The first byte of an outbox row that packs several entries (a [`Packet`]). A row of one
/// entry (what the store wrote before packets, still read) starts with its topic's length, a
/// big-endian `u32` whose first byte is 0 (topics are short).
const PACKET: u8 = 0xB0;

/// The outbox entries of one [`write_batches`] call (a group-commit round, or one logged
/// record when the store applier puts the log into the file), as one row: [`PACKET`], then
/// for each entry its number (`u64`), the length of its encoding (`u32`) and the encoding
/// ([`encode_outbox_into`]), all big-endian. One insert, and one delete once Kafka has every
/// entry, instead of an insert and a delete per event.
#[derive(Default)]
struct Packet {
    first: Option<u64>,
    bytes: Vec<u8>,
}

impl Packet {
    fn add(&mut self, seq: u64, m: &OutboxMessage) {
        if self.first.is_none() {
            self.first = Some(seq);
            self.bytes.push(PACKET);
        }
        let len = 8 + m.topic.len() + m.key.len() + m.payload.len();
        self.bytes.reserve(12 + len);
        self.bytes.extend_from_slice(&seq.to_be_bytes());
        self.bytes.extend_from_slice(&(len as u32).to_be_bytes());
        encode_outbox_into(&mut self.bytes, m);
    }
}

/// The entries of the outbox row `row` (a packet, or a single entry written before packets).
fn decode_outbox_row(row: u64, b: &[u8]) -> Result<Vec<OutboxEntry>, StoreError> {
    if b.first() != Some(&PACKET) {
        return Ok(vec![OutboxEntry {
            seq: row,
            packet: row,
            message: decode_outbox(row, b)?,
        }]);
    }
    let corrupt = || StoreError::Corrupt {
        key: format!("outbox/{row}"),
        message: "truncated packet of entries".into(),
    };
    let mut out = Vec::new();
    let mut at = 1;
    while at < b.len() {
        let seq = u64::from_be_bytes(
            b.get(at..at + 8)
                .ok_or_else(corrupt)?
                .try_into()
                .expect("8 bytes"),
        );
        let len = u32::from_be_bytes(
            b.get(at + 8..at + 12)
                .ok_or_else(corrupt)?
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        let entry = b.get(at + 12..at + 12 + len).ok_or_else(corrupt)?;
        out.push(OutboxEntry {
            seq,
            packet: row,
            message: decode_outbox(seq, entry)?,
        });
        at += 12 + len;
    }
    Ok(out)
}

/// How many entries the outbox row holds, without decoding them.
fn outbox_row_entries(b: &[u8]) -> u64 {
    if b.first() != Some(&PACKET) {
        return 1;
    }
    let mut n = 0;
    let mut at = 1;
    while let Some(len) = b.get(at + 8..at + 12) {
        n += 1;
        at += 12 + u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
    }
    n
}

fn decode_outbox(seq: u64, b: &[u8]) -> Result<OutboxMessage, StoreError> {
    let corrupt = || StoreError::Corrupt {
        key: format!("outbox/{seq}"),
        message: "truncated entry".into(),
    };
    let take = |b: &[u8], at: usize| -> Option<(String, usize)> {
        let n = u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize;
        let s = std::str::from_utf8(b.get(at + 4..at + 4 + n)?)
            .ok()?
            .to_string();
        Some((s, at + 4 + n))
    };
    let (topic, at) = take(b, 0).ok_or_else(corrupt)?;
    let (key, at) = take(b, at).ok_or_else(corrupt)?;
    Ok(OutboxMessage {
        topic: topic.into(),
        key: key.into(),
        payload: b[at..].to_vec(),
    })
}

const ALREADY_OPEN: &str = "the database file is open in another switchyard store of this process";

/// How often a broken database is opened again at most.
const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The page cache of a file opened without a configuration (tests, tools): 64 MiB. redb's own
/// default is 1 GiB per file, which a store of several files would grow into as it writes.
pub(crate) const DEFAULT_CACHE_BYTES: usize = 64 << 20;

impl EmbeddedStore {
    /// Opens (or creates) the database file `<dir>/switchyard.redb`, waiting up to 10 s (on this
    /// thread) for another instance in this process that still holds it.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        Self::open_with(
            dir,
            Shard::ONLY,
            std::time::Duration::from_secs(10),
            DEFAULT_CACHE_BYTES,
            true,
        )
    }

    /// Opens every shard of the store an application wrote in `dir`, however many
    /// `store.shards` it was written with (tools and tests that read a data directory).
    pub fn open_all(dir: &Path) -> Result<std::sync::Arc<dyn super::Store>, StoreError> {
        let wait = std::time::Duration::from_secs(10);
        let of = {
            let path = dir.join(Shard::ONLY.file_name());
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            Self::open_db(&path, None, wait, DEFAULT_CACHE_BYTES)?.1
        };
        Self::open_shards(dir, of, DEFAULT_CACHE_BYTES * (of as usize + 1), true)
    }

    /// Opens (or creates) a store of `shards` shards in `dir` with `cache_bytes` of page cache
    /// over all its files, as `store.shards` and `store.cache_mib` ask; the application's own
    /// opener waits without blocking its runtime instead.
    pub fn open_sharded(
        dir: &Path,
        shards: u64,
        cache_bytes: usize,
        wal: bool,
    ) -> Result<std::sync::Arc<dyn super::Store>, StoreError> {
        Self::open_shards(dir, shards, cache_bytes, wal)
    }

    /// The page cache of each file when a store of `shards` shards has `total` bytes.
    pub(crate) fn cache_per_file(total: usize, shards: u64) -> usize {
        total / (shards as usize + 1)
    }

    fn open_shards(
        dir: &Path,
        of: u64,
        cache_bytes: usize,
        wal: bool,
    ) -> Result<std::sync::Arc<dyn super::Store>, StoreError> {
        let wait = std::time::Duration::from_secs(10);
        let cache = Self::cache_per_file(cache_bytes, of);
        let mut shards: Vec<std::sync::Arc<dyn super::Store>> = Vec::new();
        for index in 0..of {
            shards.push(std::sync::Arc::new(Self::open_with(
                dir,
                Shard { index, of },
                wait,
                cache,
                wal,
            )?));
        }
        let control =
            std::sync::Arc::new(Self::open_with(dir, Shard::control(of), wait, cache, wal)?);
        Ok(std::sync::Arc::new(super::ShardedStore::with_control(
            shards, control,
        )))
    }

    /// As [`open`](Self::open), without waiting: `Ok(None)` when another instance in this
    /// process still holds the file (an async caller waits without blocking its runtime, on
    /// which that instance may need to run to let go).
    pub(crate) fn try_open(
        dir: &Path,
        shard: Shard,
        cache_bytes: usize,
        wal: bool,
    ) -> Result<Option<EmbeddedStore>, StoreError> {
        match Self::open_with(dir, shard, std::time::Duration::ZERO, cache_bytes, wal) {
            Ok(s) => Ok(Some(s)),
            Err(StoreError::Open { message, .. }) if message == ALREADY_OPEN => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open_with(
        dir: &Path,
        shard: Shard,
        wait: std::time::Duration,
        cache_bytes: usize,
        wal: bool,
    ) -> Result<EmbeddedStore, StoreError> {
        let path = dir.join(shard.file_name());
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let (db, shards) = Self::open_db(&path, Some(shard.of), wait, cache_bytes)?;
        let wal = Self::recover(&db, &path, wal, None)?.map(std::sync::Mutex::new);
        Ok(EmbeddedStore {
            wal,
            path,
            shards,
            cache_bytes,
            db: std::sync::RwLock::new(Some(db)),
            broken: std::sync::atomic::AtomicBool::new(false),
            last_reopen: std::sync::Mutex::new(None),
            leases: Default::default(),
            backlog: std::sync::OnceLock::new(),
        })
    }

    /// Applies the write-ahead log's records that the file does not include yet (a crash since
    /// the last checkpoint), commits them with a sync and empties the log. Returns the log to
    /// write to when `keep` (`store.wal`); without it, the log file is removed once applied.
    ///
    /// `through`: a file whose writes are logged, then applied, reopened after an I/O error:
    /// only the records up to that number are applied again (the ones redb held before the
    /// error; the applier still has the later ones), and the log keeps the later ones.
    fn recover(
        db: &Database,
        store: &Path,
        keep: bool,
        through: Option<u64>,
    ) -> Result<Option<Wal>, StoreError> {
        let path = Wal::path_for(store);
        let err = |m: String| StoreError::Open {
            path: path.display().to_string(),
            message: m,
        };
        if !keep && !path.exists() && !Wal::sealed_path(&path).exists() {
            return Ok(None);
        }
        let (mut wal, records) = Wal::open(&path).map_err(|e| err(e.to_string()))?;
        let applied = {
            let r = db.begin_read().map_err(be)?;
            let meta = r.open_table(META).map_err(be)?;
            let v = meta.get(WAL_LSN).map_err(be)?.map_or(0, |v| v.value());
            v
        };
        let todo: Vec<&wal::Record> = records
            .iter()
            .filter(|r| r.lsn > applied && through.is_none_or(|t| r.lsn <= t))
            .collect();
        if !todo.is_empty() {
            let started = std::time::Instant::now();
            let w = begin_synced(db)?;
            let mut batch_records = 0usize;
            for r in &todo {
                let corrupt = |m: String| StoreError::Corrupt {
                    key: format!("{} record {}", path.display(), r.lsn),
                    message: m,
                };
                if r.payload.first() == Some(&wal::BATCHES) {
                    // Batches (a file whose writes are logged, then applied): written again
                    // as the applier would have, from the state the file holds up to the
                    // record before.
                    let batches: Vec<WriteBatch> = serde_json::from_slice(&r.payload[1..])
                        .map_err(|e| corrupt(e.to_string()))?;
                    write_batches(&w, &batches, None, Some(r.lsn))?;
                    batch_records += 1;
                    continue;
                }
                for op in wal::ops(&r.payload) {
                    replay(&w, &op.map_err(corrupt)?)?;
                }
            }
            w.commit().map_err(be)?;
            if batch_records > 0 {
                tracing::info!(log = %path.display(), records = batch_records, "logged write batches not yet in the store file written again from the write-ahead log");
            }
            tracing::info!(log = %path.display(), records = todo.len(), secs = started.elapsed().as_secs_f64(), "store writes since the last checkpoint applied again from the write-ahead log");
        }
        // (A reopen of a file whose writes are logged, then applied, leaves the log as it is:
        // the applier still needs its later records, and its next checkpoint drops the rest.
        // Changing the log here could leave the logger's log behind if the reopen then failed.)
        if through.is_none() {
            wal.empty().map_err(|e| err(e.to_string()))?;
        }
        wal.start_at(applied.max(records.last().map_or(0, |r| r.lsn)) + 1);
        if keep {
            Ok(Some(wal))
        } else {
            drop(wal);
            std::fs::remove_file(&path).map_err(|e| err(e.to_string()))?;
            Ok(None)
        }
    }

    /// A synced redb commit: every earlier (unsynced) commit is in the file itself now, and the
    /// write-ahead log is emptied. Takes redb's write lock before the log's, as writers do.
    fn checkpoint(&self, db: &Database, force: bool) -> Result<(), StoreError> {
        let Some(m) = &self.wal else {
            return Ok(());
        };
        let w = begin_synced(db)?;
        let mut wal = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !force && !wal.checkpoint_due() {
            return Ok(()); // another writer's checkpoint came first
        }
        let started = std::time::Instant::now();
        {
            let mut meta = w.open_table(META).map_err(be)?;
            meta.insert(WAL_LSN, wal.next_lsn() - 1).map_err(be)?;
        }
        w.commit().map_err(be)?;
        let bytes = wal.len();
        wal.empty().map_err(|e| {
            StoreError::Backend(format!(
                "emptying the write-ahead log {}: {e}",
                wal.path().display()
            ))
        })?;
        wal::record_checkpoint(started.elapsed(), bytes);
        Ok(())
    }

    /// Opens the file and checks its format and shard count (`None`: whatever the file says;
    /// 1 for a new file). Returns the shard count.
    fn open_db(
        path: &Path,
        expect: Option<u64>,
        wait: std::time::Duration,
        cache_bytes: usize,
    ) -> Result<(Database, u64), StoreError> {
        let err = |m: String| StoreError::Open {
            path: path.display().to_string(),
            message: m,
        };
        // Another instance in this process that is shutting down may still hold the file for a
        // moment (its writer thread drains last); wait for it rather than fail.
        let mut waited = std::time::Duration::ZERO;
        let opening = std::time::Instant::now();
        let db = loop {
            // After an unclean stop (kill -9, power loss) redb walks the whole file to verify
            // it and rebuild its allocator state before it opens: say so, with progress.
            let shown = path.display().to_string();
            let last = std::sync::Mutex::new(std::time::Instant::now());
            let mut builder = Database::builder();
            builder.set_cache_size(cache_bytes).set_repair_callback(move |s| {
                let mut last = last.lock().expect("lock");
                if last.elapsed() >= std::time::Duration::from_secs(1) || s.progress() == 0.0 {
                    *last = std::time::Instant::now();
                    tracing::warn!(file = %shown, progress = format!("{:.0} %", s.progress() * 100.0), "store file not closed cleanly: verifying it and rebuilding its free-space map before opening");
                }
            });
            match builder.create(path) {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if waited < wait => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    waited += std::time::Duration::from_millis(50);
                }
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(err(ALREADY_OPEN.into()))
                }
                Err(e) => return Err(err(e.to_string())),
            }
        };
        if opening.elapsed() >= std::time::Duration::from_secs(1) {
            tracing::info!(file = %path.display(), secs = opening.elapsed().as_secs_f64(), "store file opened");
        }
        let mut w = db.begin_write().map_err(|e| err(e.to_string()))?;
        w.set_quick_repair(true); // synced by redb (`begin_synced`; this error names the file)
        let shards;
        {
            // Create every table so that readers never meet a missing one.
            w.open_table(ORDERS).map_err(be)?;
            w.open_table(PER_METER).map_err(be)?;
            w.open_table(COMMANDS).map_err(be)?;
            w.open_table(EXCEPTIONS).map_err(be)?;
            w.open_table(AUDIT_LOG).map_err(be)?;
            w.open_table(OUTBOX).map_err(be)?;
            w.open_table(CAMPAIGNS).map_err(be)?;
            w.open_table(CAMPAIGN_ORDERS).map_err(be)?;
            w.open_table(CAMPAIGN_RELEASES).map_err(be)?;
            w.open_table(KEPT).map_err(be)?;
            w.open_table(EXCEPTION_TASKS).map_err(be)?;
            w.open_table(READ_WATCH).map_err(be)?;
            {
                // A file from before the receipt index: index its orders once.
                let mut by_receipt = w.open_table(ORDERS_BY_RECEIPT).map_err(be)?;
                if by_receipt.is_empty().map_err(be)? {
                    let orders = w.open_table(ORDERS).map_err(be)?;
                    for item in orders.iter().map_err(be)? {
                        let (k, v) = item.map_err(be)?;
                        let rec: OrderRecord = decode(k.value(), v.value())?;
                        by_receipt
                            .insert((super::received_ns(rec.received_at), k.value()), ())
                            .map_err(be)?;
                    }
                }
            }
            let mut meta = w.open_table(META).map_err(be)?;
            let format = meta.get("format").map_err(be)?.map(|v| v.value());
            let stored_shards = meta.get("shards").map_err(be)?.map(|v| v.value());
            shards = expect.or(stored_shards).unwrap_or(1);
            match format {
                Some(f) if (f == FORMAT || FORMAT_UPGRADED.contains(&f))
                    && stored_shards.unwrap_or(1) != shards =>
                {
                    return Err(err(format!(
                        "the data directory was written with store.shards = {}, and store.shards is {shards} now: a meter's rows would be looked for in the wrong file. Set store.shards = {} again (or move the data directory away to start empty)",
                        stored_shards.unwrap_or(1),
                        stored_shards.unwrap_or(1)
                    )))
                }
                Some(FORMAT) => {}
                Some(f) if FORMAT_UPGRADED.contains(&f) => {
                    if f < 5 {
                        let (meters, open) = move_into_per_meter(&w, path)?;
                        meta.insert(METERS_COUNT, meters).map_err(be)?;
                        meta.insert(OPEN_COUNT, open).map_err(be)?;
                    }
                    // (Format 5 → 6 changes only how new audit events are written.)
                    meta.insert("format", FORMAT).map_err(be)?;
                }
                Some(other) => {
                    return Err(err(format!(
                        "the file has store format {other}, this switchyard reads format {FORMAT}; run the switchyard version that wrote it, or move the file away to start empty"
                    )))
                }
                None => {
                    let old = w.open_table(AUDIT_V1).map_err(be)?;
                    if old.len().map_err(be)? > 0 {
                        return Err(err(format!(
                            "the file was written by an older switchyard (store format 1, audit rows keyed by meter); this version writes format {FORMAT}. Move the file away to start empty"
                        )));
                    }
                    drop(old);
                    w.delete_table(AUDIT_V1).map_err(be)?;
                    meta.insert("format", FORMAT).map_err(be)?;
                    meta.insert("shards", shards).map_err(be)?;
                }
            }
        }
        w.commit().map_err(be)?;
        Ok((db, shards))
    }

    /// Opens the database again after a failed write (a full disk, say): redb refuses every
    /// write after an I/O error until then. Nothing acknowledged is lost: the failed
    /// transaction was never acknowledged, and its callers retry it.
    fn reopen(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        {
            let mut last = self.last_reopen.lock().expect("lock");
            if last.is_some_and(|t| t.elapsed() < REOPEN_EVERY) {
                return Err(StoreError::Backend(
                    "the embedded store is being reopened after an I/O error".into(),
                ));
            }
            *last = Some(std::time::Instant::now());
        }
        let mut db = self.db.write().expect("lock");
        *db = None; // releases the file
        let (fresh, _) = Self::open_db(
            &self.path,
            Some(self.shards),
            std::time::Duration::ZERO,
            self.cache_bytes,
        )
        .map_err(|e| StoreError::Backend(format!("reopening after an I/O error: {e}")))?;
        if let Some(m) = &self.wal {
            // (No write to redb is under way: they all hold the read side of `db`. A logger
            // may be appending: the log is held until the new one replaces it.)
            let mut log = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let through = self.backlog.get().map(Backlog::applied_lsn);
            let fresh_log = Self::recover(&fresh, &self.path, true, through)
                .map_err(|e| StoreError::Backend(format!("reopening after an I/O error: {e}")))?;
            *log = fresh_log.expect("kept");
        }
        *db = Some(fresh);
        self.broken.store(false, Ordering::SeqCst);
        tracing::info!(path = %self.path.display(), "embedded store reopened after an I/O error; writes resume");
        Ok(())
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.read_after(Keys::All, f)
    }

    /// A read once the file holds every acknowledged write it needs (`keys`), when its writes
    /// are logged, then applied.
    fn read_after<T>(
        &self,
        keys: Keys<'_>,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if let Some(b) = self.backlog.get() {
            b.settle(keys, SETTLE_LIMIT)?;
        }
        {
            let g = self.db.read().expect("lock");
            if let Some(db) = g.as_ref() {
                let r = db.begin_read().map_err(be)?;
                return f(&r);
            }
        }
        // Closed by a reopen that failed (the disk still full): readers try again too, so that
        // the store comes back even when nothing writes (at most once a second).
        self.reopen()?;
        let g = self.db.read().expect("lock");
        let db = g.as_ref().ok_or_else(|| {
            StoreError::Backend("the embedded store is being reopened after an I/O error".into())
        })?;
        let r = db.begin_read().map_err(be)?;
        f(&r)
    }
}

/// Logged, then applied: the group-commit writer of a meter shard only logs (its callers are
/// answered once their batches are durable in the write-ahead log), and an applier thread puts
/// the logged batches in the file, several rounds to a transaction, and checkpoints it. A
/// checkpoint (a synced redb commit, 100-150 ms under steady load) then holds the applier,
/// never a caller. Reads wait for what they need ([`Backlog`]).
impl EmbeddedStore {
    /// Appends the batches to the log as one record (synced) and queues them for the applier.
    fn log_batches(
        &self,
        b: &Backlog,
        batches: Vec<WriteBatch>,
    ) -> Result<u64, (StoreError, Vec<WriteBatch>)> {
        let Some(m) = &self.wal else {
            return Err((
                StoreError::Backend("logging needs the write-ahead log (store.wal)".into()),
                batches,
            ));
        };
        if batches.iter().any(|x| !x.kept.is_empty()) {
            return Err((
                StoreError::Backend(
                    "kept table records belong in the control file, which is not logged this way"
                        .into(),
                ),
                batches,
            ));
        }
        if !b.room() {
            return Err((
                StoreError::Backend(
                    "the store's writer for this file has stopped (shutting down)".into(),
                ),
                batches,
            ));
        }
        let mut payload = Vec::with_capacity(1 + 2048 * batches.len());
        payload.push(wal::BATCHES);
        serde_json::to_writer(&mut payload, &batches).expect("write batches serialize");
        let mut wal = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let lsn = wal.next_lsn();
        if let Err(e) = wal.append(lsn, &payload) {
            let e = StoreError::Backend(format!(
                "appending to the write-ahead log {}: {e}",
                wal.path().display()
            ));
            return Err((e, batches));
        }
        // Queued while the log is held: the applier takes records in log order.
        b.logged(lsn, batches);
        Ok(lsn)
    }

    /// The applier's transaction: the records, in order, in one unsynced redb commit that
    /// says it holds them up to the last one. On a failure they go back to the backlog (the
    /// file is reopened before the next try, at most once a second).
    fn apply_records(
        &self,
        b: &Backlog,
        records: Vec<backlog::Record>,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        use std::sync::atomic::Ordering;
        if self.broken.load(Ordering::SeqCst) {
            if let Err(e) = self.reopen() {
                b.give_back(records);
                return Err(e);
            }
        }
        let through = records.last().map_or(0, |r| r.0);
        let started = std::time::Instant::now();
        let result = (|| {
            let g = self.db.read().expect("lock");
            let db = g.as_ref().ok_or_else(|| {
                StoreError::Backend(
                    "the embedded store is being reopened after an I/O error".into(),
                )
            })?;
            let mut w = db.begin_write().map_err(be)?;
            w.set_durability(redb::Durability::None).map_err(be)?;
            // Records the file holds already are not written again: a commit that failed may
            // have become durable after all (redb says so of `commit`), and a reopen after it
            // then finds them in the file.
            let held = {
                let meta = w.open_table(META).map_err(be)?;
                let v = meta.get(WAL_LSN).map_err(be)?.map_or(0, |v| v.value());
                v
            };
            let mut entries = Vec::new();
            for (lsn, batches) in records.iter().filter(|r| r.0 > held) {
                let last = *lsn == through;
                entries.extend(write_batches(&w, batches, None, last.then_some(through))?);
            }
            if through <= held {
                w.abort().map_err(be)?;
            } else {
                w.commit().map_err(be)?;
            }
            Ok(entries)
        })();
        match result {
            Ok(entries) => {
                b.applied(through, &records);
                backlog::record_apply(started.elapsed());
                Ok(entries)
            }
            Err(e) => {
                self.broken.store(true, Ordering::SeqCst);
                b.give_back(records);
                Err(e)
            }
        }
    }

    /// A checkpoint of a file whose writes are logged, then applied: a synced redb commit,
    /// then the log's records that the file now holds are dropped. The log stays open to the
    /// logger meanwhile. The number of the last record the file holds is read in the synced
    /// transaction itself, so a checkpoint from any thread says what it includes.
    fn checkpoint_applied(&self, db: &Database) -> Result<(), StoreError> {
        let Some(m) = &self.wal else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let w = begin_synced(db)?;
        let through = {
            let mut meta = w.open_table(META).map_err(be)?;
            let v = meta.get(WAL_LSN).map_err(be)?.map_or(0, |v| v.value());
            meta.insert(WAL_LSN, v).map_err(be)?;
            v
        };
        w.commit().map_err(be)?;
        let mut wal = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = wal.len();
        wal.release_through(through).map_err(|e| {
            StoreError::Backend(format!(
                "dropping checkpointed records of the write-ahead log {}: {e}",
                wal.path().display()
            ))
        })?;
        wal::record_checkpoint(started.elapsed(), before.saturating_sub(wal.len()));
        Ok(())
    }

    fn apply_once(&self, batches: &[WriteBatch]) -> Result<Vec<OutboxEntry>, StoreError> {
        let g = self.db.read().expect("lock");
        let db = g.as_ref().ok_or_else(|| {
            StoreError::Backend("the embedded store is being reopened after an I/O error".into())
        })?;
        let mut w = db.begin_write().map_err(be)?;
        // With a write-ahead log, the transaction's changes are recorded as it makes them and
        // the log, not redb, makes them durable (src/store/wal.rs). The log is locked only while
        // this write transaction is open: every writer takes redb's write lock first.
        let ops = std::cell::RefCell::new(Ops::default());
        let wal = match &self.wal {
            Some(m) => {
                w.set_durability(redb::Durability::None).map_err(be)?;
                // (Not poisoned for good by a panicking writer: the log is consistent
                // between calls, and a reopen re-reads it from the file.)
                Some(m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
            }
            None => None,
        };
        let log = wal.is_some().then_some(&ops);
        let wal_lsn = wal.as_ref().map(|wal| wal.next_lsn());
        let published = write_batches(&w, batches, log, wal_lsn)?;
        let Some(mut wal) = wal else {
            w.set_quick_repair(true); // synced by redb (`begin_synced`)
            w.commit().map_err(be)?;
            return Ok(published);
        };
        let lsn = wal.next_lsn();
        if ops.borrow().as_bytes().len() as u64 >= wal::SYNC_ABOVE_BYTES {
            // A large group commit: redb's own synced commit writes its pages once, cheaper
            // than logging them first; and it is a checkpoint (every earlier unsynced commit
            // is in the file now, `wal_lsn` says so), so the log is emptied.
            w.set_durability(redb::Durability::Immediate).map_err(be)?;
            w.set_quick_repair(true); // (`begin_synced`)
            let started = std::time::Instant::now();
            // Numbered on before the commit: a failed synced commit may still be on disk
            // (redb's `commit` says so), with `wal_lsn` = `lsn`; a later record must not
            // reuse the number, or the replay would skip it.
            wal.start_at(lsn + 1);
            w.commit().map_err(be)?;
            let bytes = wal.len();
            if let Err(e) = wal.empty() {
                // Harmless: the records it keeps are at or below the file's `wal_lsn` (skipped
                // by a replay), and the next record goes where the file really ends.
                tracing::warn!(log = %wal.path().display(), error = %e, "cannot empty the write-ahead log after a synced commit");
            } else {
                wal::record_checkpoint(started.elapsed(), bytes);
            }
            return Ok(published);
        }
        let at = wal.append(lsn, ops.borrow().as_bytes()).map_err(|e| {
            StoreError::Backend(format!(
                "appending to the write-ahead log {}: {e}",
                wal.path().display()
            ))
        })?;
        if let Err(e) = w.commit() {
            // The record must not outlive a write that did not happen: the caller retries it.
            if let Err(cut) = wal.cut(at) {
                tracing::error!(log = %wal.path().display(), error = %cut, commit_error = %e, "a write failed after its write-ahead log record was synced, and the record cannot be cut off the log; stopping, so that the restart applies it (a write durable but not acknowledged, as after a crash)");
                std::process::abort();
            }
            return Err(be(e));
        }
        // The group-commit writer checkpoints after it has answered the round
        // (`checkpoint_if_due`), so that the writes of this round do not wait for it; a file
        // written only through direct writes (a campaign's `write_now`) checkpoints here, once
        // twice overdue.
        let due = wal.checkpoint_overdue();
        drop(wal);
        if due {
            // Not a failure of this write, which is durable in the log: the next write tries again.
            if let Err(e) = self.checkpoint(db, false) {
                tracing::warn!(file = %self.path.display(), error = %e, "store checkpoint failed; the write-ahead log keeps the writes and grows until one succeeds");
            }
        }
        Ok(published)
    }
}

/// Writes the batches in the transaction `w`, in order: what one group commit, an applier's
/// transaction or a replayed record of batches does. Records every change in `log` when given
/// (the physical record of a logged transaction), and stores `wal_lsn` as the number of the
/// last log record the file includes. Returns the outbox entries written.
fn write_batches(
    w: &redb::WriteTransaction,
    batches: &[WriteBatch],
    log: Option<&std::cell::RefCell<Ops>>,
    wal_lsn: Option<u64>,
) -> Result<Vec<OutboxEntry>, StoreError> {
    let mut published = Vec::new();
    // Read inside the write transaction: two writers (the group-commit thread and a
    // campaign's `write_now`) must never number outbox entries alike.
    let mut seq = {
        let meta = w.open_table(META).map_err(be)?;
        let v = meta.get("seq").map_err(be)?.map(|v| v.value());
        v.unwrap_or(0)
    };

    {
        let mut orders = logged(w, ORDERS, table_id::ORDERS, log)?;
        // A meter's snapshot, open orders and audit head (one table, one leaf per meter);
        // how many snapshots and open orders this transaction added (or removed).
        let mut pm = logged(w, PER_METER, table_id::PER_METER, log)?;
        let (mut meters_added, mut open_added) = (0i64, 0i64);
        let mut commands = logged(w, COMMANDS, table_id::COMMANDS, log)?;
        let mut exceptions = logged(w, EXCEPTIONS, table_id::EXCEPTIONS, log)?;
        let mut audit = logged(w, AUDIT_LOG, table_id::AUDIT_LOG, log)?;
        // Heads moved in this transaction (position and time), written once per meter at
        // the end.
        let mut moved: std::collections::HashMap<&str, (u64, Option<jiff::Timestamp>)> =
            std::collections::HashMap::new();
        let mut audit_events: Vec<&AuditEvent> = Vec::new();
        let mut outbox = logged(w, OUTBOX, table_id::OUTBOX, log)?;
        let mut packet = Packet::default();
        let mut campaigns = logged(w, CAMPAIGNS, table_id::CAMPAIGNS, log)?;
        let mut campaign_orders = logged(w, CAMPAIGN_ORDERS, table_id::CAMPAIGN_ORDERS, log)?;
        let mut campaign_releases = logged(w, CAMPAIGN_RELEASES, table_id::CAMPAIGN_RELEASES, log)?;
        let mut kept = logged(w, KEPT, table_id::KEPT, log)?;
        let mut by_receipt = logged(w, ORDERS_BY_RECEIPT, table_id::ORDERS_BY_RECEIPT, log)?;
        let mut watch = logged(w, READ_WATCH, table_id::READ_WATCH, log)?;
        for b in batches {
            for c in &b.watches {
                match c {
                    crate::domain::WatchChange::Set(x) => {
                        watch
                            .insert(x.meter_id.as_str(), encode(x).as_slice())
                            .map_err(be)?;
                    }
                    crate::domain::WatchChange::Clear(m) => {
                        watch.remove(m.as_str()).map_err(be)?;
                    }
                }
            }
            for k in &b.kept {
                let key = open_key(k.table, &k.key);
                match &k.value {
                    Some(v) => {
                        kept.insert(key.as_str(), v.as_slice()).map_err(be)?;
                    }
                    None => {
                        kept.remove(key.as_str()).map_err(be)?;
                    }
                }
            }
            for c in &b.campaigns {
                campaigns
                    .insert(c.def.campaign_id.as_str(), encode(c).as_slice())
                    .map_err(be)?;
            }
            for (cid, o) in &b.campaign_orders {
                let k = open_key(cid, &o.order_id);
                if campaign_orders.get(k.as_str()).map_err(be)?.is_none() {
                    campaign_orders
                        .insert(k.as_str(), encode(o).as_slice())
                        .map_err(be)?;
                }
            }
            for (cid, oid, at) in &b.campaign_releases {
                campaign_releases
                    .insert(open_key(cid, oid).as_str(), at.as_nanosecond() as i64)
                    .map_err(be)?;
            }
            for rec in &b.new_orders {
                let id = rec.order.order_id.as_str();
                if orders.get(id).map_err(be)?.is_none() {
                    orders.insert(id, encode(rec).as_slice()).map_err(be)?;
                    by_receipt
                        .insert((super::received_ns(rec.received_at), id), ())
                        .map_err(be)?;
                    if !rec.status.is_terminal() {
                        if !pm
                            .insert(per_meter::open(&rec.order.meter_id, id).as_str(), &[][..])
                            .map_err(be)?
                        {
                            open_added += 1;
                        }
                    }
                }
            }
            // (The record stays until the new meter's step stores it: the order is never
            // unknown in between, so a resend of its id is still a duplicate.)
            for (m, id) in &b.carried_away {
                if pm.remove(per_meter::open(m, id).as_str()).map_err(be)? {
                    open_added -= 1;
                }
            }
            // Records of orders carried to a meter of another file (sharded store).
            for (_, id) in &b.carried_elsewhere {
                let before = orders
                    .get(id.as_str())
                    .map_err(be)?
                    .map(|v| v.value().to_vec());
                if let Some(bytes) = before {
                    let old: OrderRecord = decode(id, &bytes)?;
                    if !old.status.is_terminal() {
                        orders.remove(id.as_str()).map_err(be)?;
                        by_receipt
                            .remove((super::received_ns(old.received_at), id.as_str()))
                            .map_err(be)?;
                        if pm
                            .remove(per_meter::open(&old.order.meter_id, id).as_str())
                            .map_err(be)?
                        {
                            open_added -= 1;
                        }
                    }
                }
            }
            for rec in &b.carried_in {
                let id = rec.order.order_id.as_str();
                let before = orders.get(id).map_err(be)?.map(|v| v.value().to_vec());
                if let Some(bytes) = before {
                    let old: OrderRecord = decode(id, &bytes)?;
                    if old.status.is_terminal() || old.order.meter_id == rec.order.meter_id {
                        continue; // ended meanwhile, or carried here already
                    }
                    by_receipt
                        .remove((super::received_ns(old.received_at), id))
                        .map_err(be)?;
                }
                orders.insert(id, encode(rec).as_slice()).map_err(be)?;
                by_receipt
                    .insert((super::received_ns(rec.received_at), id), ())
                    .map_err(be)?;
                if !pm
                    .insert(per_meter::open(&rec.order.meter_id, id).as_str(), &[][..])
                    .map_err(be)?
                {
                    open_added += 1;
                }
            }
            for u in &b.order_updates {
                // An open order's status lives in its meter's snapshot and audit chain
                // (every status change has its audit row in the same batch; `order` reads
                // it from there): the record is rewritten once, when the order ends.
                if !u.status.is_terminal() {
                    continue;
                }
                let current = orders
                    .get(u.order_id.as_str())
                    .map_err(be)?
                    .map(|v| v.value().to_vec());
                if let Some(bytes) = current {
                    let mut rec: OrderRecord = decode(&u.order_id, &bytes)?;
                    if rec.status.is_terminal() {
                        continue; // terminal is final
                    }
                    rec.status = u.status;
                    rec.updated_at = u.at;
                    if u.reason.is_some() {
                        rec.reason = u.reason.clone();
                    }
                    orders
                        .insert(u.order_id.as_str(), encode(&rec).as_slice())
                        .map_err(be)?;
                    if u.status.is_terminal() {
                        if pm
                            .remove(per_meter::open(&u.meter_id, &u.order_id).as_str())
                            .map_err(be)?
                        {
                            open_added -= 1;
                        }
                    }
                }
            }
            if let Some(m) = &b.meter {
                if !pm
                    .insert(
                        per_meter::snapshot(&m.meter_id).as_str(),
                        encode(m).as_slice(),
                    )
                    .map_err(be)?
                {
                    meters_added += 1;
                }
            }
            for c in &b.commands {
                let rec = CommandRecord {
                    command: c.clone(),
                    results: Vec::new(),
                };
                commands
                    .insert(c.command_id.as_str(), encode(&rec).as_slice())
                    .map_err(be)?;
            }
            for a in &b.answered {
                // The claim that makes the blind write right, checked in the crate's own
                // tests (they drive real meter actors through this store); never a panic of
                // the writer in a running service.
                #[cfg(test)]
                if let Some(v) = commands.get(a.command.command_id.as_str()).map_err(be)? {
                    let stored: CommandRecord = decode(&a.command.command_id, v.value())?;
                    assert!(
                        stored.command == a.command && stored.results.is_empty(),
                        "an answered command differs from its stored record: {stored:?} / {a:?}"
                    );
                }
                commands
                    .insert(a.command.command_id.as_str(), encode(a).as_slice())
                    .map_err(be)?;
            }
            for r in &b.results {
                let current = commands
                    .get(r.command_id.as_str())
                    .map_err(be)?
                    .map(|v| v.value().to_vec());
                if let Some(bytes) = current {
                    let mut rec: CommandRecord = decode(&r.command_id, &bytes)?;
                    rec.results.push(r.clone());
                    commands
                        .insert(r.command_id.as_str(), encode(&rec).as_slice())
                        .map_err(be)?;
                }
            }
            for x in &b.exceptions {
                exceptions
                    .insert(x.exception_id.as_str(), encode(x).as_slice())
                    .map_err(be)?;
            }
            // (Numbered and packed after the batches, below: one row per 64 of them.)
            audit_events.extend(&b.audit);
            for m in &b.outbox {
                seq += 1;
                packet.add(seq, m);
                published.push(OutboxEntry {
                    seq,
                    packet: 0, // (the packet's number, set below)
                    message: m.clone(),
                });
            }
            for s in &b.outbox_acked {
                outbox.remove(*s).map_err(be)?;
            }
        }
        // All the outbox entries of these batches in one row, numbered by its first entry.
        if let Some(first) = packet.first {
            outbox.insert(first, packet.bytes.as_slice()).map_err(be)?;
            for e in &mut published {
                e.packet = first;
            }
        }
        // The audit events of all the batches, in their order, numbered one after another
        // and packed in rows of at most `AUDIT_PACKED_MAX`. They are numbered after the
        // outbox entries, where format 5 interleaved the two per batch: within one version
        // nothing depends on it, but a log of batches (`store.applier`) left by a format-5
        // switchyard replays with other outbox numbers (docs/architecture.md, store layout:
        // upgrade after a clean stop).
        let mut packed = AuditPacket::default();
        let mut extra = 0u64;
        for a in audit_events {
            seq += 1;
            if packed.n == AUDIT_PACKED_MAX {
                extra += packed.write(&mut audit)? as u64 - 1;
            }
            let (prev, prev_at) = match moved.get(a.meter_id.as_str()) {
                Some(p) => *p,
                None => {
                    let p = match pm.get(per_meter::head(&a.meter_id).as_str()).map_err(be)? {
                        Some(v) => per_meter::head_of(&a.meter_id, v.value())?,
                        None => 0,
                    };
                    (p, head_at(&*audit, p)?)
                }
            };
            // A meter's chain is newest first by time as well as by position (paging, and
            // the scans that stop at an order's receipt, rely on it): an event stamped a few
            // microseconds before the event written ahead of it (the intake's `received`
            // racing the meter actor's step) is recorded at that event's time.
            let at = match prev_at {
                Some(p) if p > a.at => {
                    let mut a = a.clone();
                    a.at = p;
                    packed.add(seq, prev, p, &a);
                    p
                }
                _ => {
                    packed.add(seq, prev, a.at, a);
                    a.at
                }
            };
            moved.insert(a.meter_id.as_str(), (seq, Some(at)));
        }
        if packed.n > 0 {
            extra += packed.write(&mut audit)? as u64 - 1;
        }
        let mut moved: Vec<(&str, u64)> = moved.into_iter().map(|(m, (h, _))| (m, h)).collect();
        moved.sort_unstable();
        for (meter, head) in moved {
            pm.insert(
                per_meter::head(meter).as_str(),
                &per_meter::head_value(head)[..],
            )
            .map_err(be)?;
        }
        let mut meta = logged(w, META, table_id::META, log)?;
        meta.insert("seq", seq).map_err(be)?;
        if extra > 0 {
            let n = meta.get(AUDIT_EXTRA).map_err(be)?.map_or(0, |v| v.value());
            meta.insert(AUDIT_EXTRA, n.saturating_add(extra))
                .map_err(be)?;
        }
        for (counter, added) in [(METERS_COUNT, meters_added), (OPEN_COUNT, open_added)] {
            if added != 0 {
                let n = meta.get(counter).map_err(be)?.map_or(0, |v| v.value());
                meta.insert(counter, n.saturating_add_signed(added))
                    .map_err(be)?;
            }
        }
        if let Some(lsn) = wal_lsn {
            meta.insert(WAL_LSN, lsn).map_err(be)?;
        }
    }
    Ok(published)
}

impl Store for EmbeddedStore {
    fn unit_lease(&self, unit: u32) -> Result<Option<super::UnitLease>, StoreError> {
        Ok(self.leases.lock().expect("lock").get(&unit).cloned())
    }

    fn swap_unit_lease(
        &self,
        unit: u32,
        expected: Option<&super::UnitLease>,
        new: &super::UnitLease,
    ) -> Result<bool, StoreError> {
        let mut l = self.leases.lock().expect("lock");
        if l.get(&unit) != expected {
            return Ok(false);
        }
        l.insert(unit, new.clone());
        Ok(true)
    }

    fn begin_logging(&self) -> bool {
        if self.wal.is_none() {
            return false;
        }
        // The backlog starts at what the file holds (nothing is queued yet).
        let held = self.read(|r| {
            let meta = r.open_table(META).map_err(be)?;
            let v = meta.get(WAL_LSN).map_err(be)?.map_or(0, |v| v.value());
            Ok(v)
        });
        match held {
            Ok(v) => {
                self.backlog.get_or_init(|| Backlog::new(v));
                true
            }
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot read the store file's log position; its writes are applied by its writer");
                false
            }
        }
    }

    fn log(&self, batches: Vec<WriteBatch>) -> Result<(), (StoreError, Vec<WriteBatch>)> {
        match self.backlog.get() {
            Some(b) => self.log_batches(b, batches).map(|_| ()),
            None => Err((
                StoreError::Backend("this store file does not log batches".into()),
                batches,
            )),
        }
    }

    fn apply_logged(&self) -> Option<Result<Vec<OutboxEntry>, StoreError>> {
        let b = self.backlog.get()?;
        let records = b.take()?;
        Some(self.apply_records(b, records))
    }

    fn end_logging(&self) {
        if let Some(b) = self.backlog.get() {
            b.close();
        }
    }

    fn checkpoint_if_due(&self) -> Result<(), StoreError> {
        let Some(m) = &self.wal else {
            return Ok(());
        };
        if !m
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .checkpoint_due()
        {
            return Ok(());
        }
        let g = self.db.read().expect("lock");
        let Some(db) = g.as_ref() else {
            return Ok(()); // being reopened: the reopen replays and empties the log
        };
        if self.backlog.get().is_some() {
            return self.checkpoint_applied(db);
        }
        self.checkpoint(db, false)
    }

    fn apply(&self, batches: &[WriteBatch]) -> Result<Vec<OutboxEntry>, StoreError> {
        use std::sync::atomic::Ordering;
        if let Some(b) = self.backlog.get() {
            // Logged like the writer's rounds, in their order, and applied by the applier
            // (which publishes the outbox entries); returns once the file holds it.
            // Durable once logged: never an error after that (the caller would write it again).
            // Waits for the applier so that the caller reads it back, but the reads wait too.
            let lsn = self.log_batches(b, batches.to_vec()).map_err(|(e, _)| e)?;
            if let Err(e) = b.settle(Keys::Through(lsn), SETTLE_LIMIT) {
                tracing::warn!(file = %self.path.display(), error = %e, "a direct write is durable in the log and not applied yet");
            }
            return Ok(Vec::new());
        }
        if self.broken.load(Ordering::SeqCst) {
            self.reopen()?;
        }
        let r = self.apply_once(batches);
        if let Err(StoreError::Backend(_)) = &r {
            self.broken.store(true, Ordering::SeqCst);
        }
        r
    }

    fn order(&self, order_id: &str) -> Result<Option<OrderRecord>, StoreError> {
        self.read(|r| {
            let t = r.open_table(ORDERS).map_err(be)?;
            let Some(v) = t.get(order_id).map_err(be)? else {
                return Ok(None);
            };
            let mut rec: OrderRecord = decode(order_id, v.value())?;
            if !rec.status.is_terminal() {
                current_status(r, &mut rec)?;
            }
            Ok(Some(rec))
        })
    }

    fn orders_exist(&self, order_ids: &[&str]) -> Result<Vec<bool>, StoreError> {
        self.read_after(Keys::Orders(order_ids), |r| {
            let t = r.open_table(ORDERS).map_err(be)?;
            order_ids
                .iter()
                .map(|id| Ok(t.get(*id).map_err(be)?.is_some()))
                .collect()
        })
    }

    fn meter(&self, meter_id: &str) -> Result<Option<MeterState>, StoreError> {
        self.read_after(Keys::Snapshot(meter_id), |r| {
            let t = r.open_table(PER_METER).map_err(be)?;
            let v = t.get(per_meter::snapshot(meter_id).as_str()).map_err(be)?;
            v.map(|v| decode(meter_id, v.value())).transpose()
        })
    }

    fn open_orders(&self, meter_id: &str) -> Result<Vec<OrderRecord>, StoreError> {
        self.read_after(Keys::Meter(meter_id), |r| {
            let open = r.open_table(PER_METER).map_err(be)?;
            let orders = r.open_table(ORDERS).map_err(be)?;
            let (lo, hi) = per_meter::open_range(meter_id);
            let mut out = Vec::new();
            for item in open.range(lo.as_str()..hi.as_str()).map_err(be)? {
                let (k, _) = item.map_err(be)?;
                let key = k.value();
                let order_id = &key[lo.len()..];
                if let Some(v) = orders.get(order_id).map_err(be)? {
                    let rec: OrderRecord = decode(order_id, v.value())?;
                    // (An order an exchange carried to another meter is that meter's.)
                    if rec.order.meter_id == meter_id {
                        out.push(rec);
                    }
                }
            }
            Ok(out)
        })
    }

    fn meters_with_open_work(&self) -> Result<Vec<String>, StoreError> {
        self.read(|r| {
            // One pass in key order: a meter's open orders come after its snapshot.
            let mut out: Vec<String> = Vec::new();
            let pm = r.open_table(PER_METER).map_err(be)?;
            for item in pm.iter().map_err(be)? {
                let (k, v) = item.map_err(be)?;
                let meter = match per_meter::parse(k.value()) {
                    per_meter::Row::Open(meter) => meter,
                    per_meter::Row::Snapshot(meter) => {
                        if !snapshot_has_work(meter, v.value())? {
                            continue;
                        }
                        meter
                    }
                    per_meter::Row::Head | per_meter::Row::Other => continue,
                };
                if out.last().map(String::as_str) != Some(meter) {
                    out.push(meter.to_string());
                }
            }
            Ok(out)
        })
    }

    fn read_watches(&self) -> Result<Vec<crate::domain::ReadWatch>, StoreError> {
        self.read(|r| {
            let t = r.open_table(READ_WATCH).map_err(be)?;
            let mut out = Vec::new();
            for item in t.iter().map_err(be)? {
                let (k, v) = item.map_err(be)?;
                out.push(decode(k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    fn kept(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.read(|r| {
            let t = r.open_table(KEPT).map_err(be)?;
            let lo = format!("{table}\0");
            let hi = format!("{table}\u{1}");
            let mut out = Vec::new();
            for item in t.range(lo.as_str()..hi.as_str()).map_err(be)? {
                let (k, v) = item.map_err(be)?;
                out.push((k.value()[lo.len()..].to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    fn campaigns(&self) -> Result<Vec<crate::domain::CampaignRecord>, StoreError> {
        self.read(|r| {
            let t = r.open_table(CAMPAIGNS).map_err(be)?;
            let mut out = Vec::new();
            for item in t.iter().map_err(be)? {
                let (k, v) = item.map_err(be)?;
                out.push(decode(k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    fn campaign_orders(
        &self,
        campaign_id: &str,
    ) -> Result<Vec<crate::domain::CampaignOrder>, StoreError> {
        self.read(|r| {
            let t = r.open_table(CAMPAIGN_ORDERS).map_err(be)?;
            let rel = r.open_table(CAMPAIGN_RELEASES).map_err(be)?;
            let lo = format!("{campaign_id}\0");
            let hi = format!("{campaign_id}\u{1}");
            let mut out = Vec::new();
            for item in t.range(lo.as_str()..hi.as_str()).map_err(be)? {
                let (k, v) = item.map_err(be)?;
                let mut o: crate::domain::CampaignOrder = decode(k.value(), v.value())?;
                let at = rel.get(k.value()).map_err(be)?.map(|v| v.value());
                o.released = at.is_some();
                o.released_at = at
                    .map(|n| crate::domain::Timestamp::from_nanosecond(i128::from(n)))
                    .transpose()
                    .map_err(|e| StoreError::Corrupt {
                        key: k.value().to_string(),
                        message: e.to_string(),
                    })?;
                out.push(o);
            }
            Ok(out)
        })
    }

    fn orders_received(
        &self,
        from: crate::domain::Timestamp,
        to: crate::domain::Timestamp,
        before: Option<&super::OrderCursor>,
        limit: usize,
    ) -> Result<Vec<OrderRecord>, StoreError> {
        let lo = super::received_ns(from);
        let top = super::OrderCursor::at_or_before(to);
        let hi = match before {
            Some(b) if b < &top => b.clone(),
            _ => top,
        };
        self.read(|r| {
            let idx = r.open_table(ORDERS_BY_RECEIPT).map_err(be)?;
            let orders = r.open_table(ORDERS).map_err(be)?;
            let mut out = Vec::new();
            let range = idx
                .range((lo, "")..(hi.received_ns, hi.order_id.as_str()))
                .map_err(be)?;
            for item in range.rev() {
                if out.len() >= limit {
                    break;
                }
                let (k, _) = item.map_err(be)?;
                let (_, id) = k.value();
                if let Some(v) = orders.get(id).map_err(be)? {
                    out.push(decode(id, v.value())?);
                }
            }
            Ok(out)
        })
    }

    fn exceptions_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ExceptionRecord>, StoreError> {
        use std::ops::Bound;
        self.read(|r| {
            let t = r.open_table(EXCEPTIONS).map_err(be)?;
            let lower = match after {
                Some(a) => Bound::Excluded(a),
                None => Bound::Unbounded,
            };
            let mut out = Vec::new();
            for item in t.range::<&str>((lower, Bound::Unbounded)).map_err(be)? {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = item.map_err(be)?;
                out.push(decode(k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    fn exception_task(
        &self,
        exception_id: &str,
        _meter_id: &str,
    ) -> Result<Option<crate::domain::ExceptionTask>, StoreError> {
        self.read(|r| {
            let t = r.open_table(EXCEPTION_TASKS).map_err(be)?;
            let v = t.get(exception_id).map_err(be)?;
            v.map(|v| decode(exception_id, v.value())).transpose()
        })
    }

    fn swap_exception_task(
        &self,
        expected: u64,
        task: &crate::domain::ExceptionTask,
    ) -> Result<bool, StoreError> {
        let g = self.db.read().expect("lock");
        let db = g.as_ref().ok_or_else(|| {
            StoreError::Backend("the embedded store is being reopened after an I/O error".into())
        })?;
        let w = begin_synced(db)?;
        let swapped = {
            let mut t = w.open_table(EXCEPTION_TASKS).map_err(be)?;
            let id = task.exception_id.as_str();
            let now = match t.get(id).map_err(be)? {
                Some(v) => decode::<crate::domain::ExceptionTask>(id, v.value())?.version,
                None => 0,
            };
            if now == expected {
                t.insert(id, encode(task).as_slice()).map_err(be)?;
                true
            } else {
                false
            }
        };
        if swapped {
            w.commit().map_err(be)?;
        } else {
            w.abort().map_err(be)?;
        }
        Ok(swapped)
    }

    fn command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError> {
        self.read(|r| {
            let t = r.open_table(COMMANDS).map_err(be)?;
            let v = t.get(command_id).map_err(be)?;
            v.map(|v| decode(command_id, v.value())).transpose()
        })
    }

    fn exception(&self, exception_id: &str) -> Result<Option<ExceptionRecord>, StoreError> {
        self.read(|r| {
            let t = r.open_table(EXCEPTIONS).map_err(be)?;
            let v = t.get(exception_id).map_err(be)?;
            v.map(|v| decode(exception_id, v.value())).transpose()
        })
    }

    fn audit(&self, meter_id: &str) -> Result<Vec<AuditEvent>, StoreError> {
        self.read(|r| {
            let mut out = Vec::new();
            for row in AuditChain::from_head(r, meter_id)? {
                out.push(row?.1);
            }
            out.reverse();
            Ok(out)
        })
    }

    fn audit_between(
        &self,
        meter_id: &str,
        from: jiff::Timestamp,
        to: jiff::Timestamp,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.read(|r| {
            // Newest first along the chain: skip what is newer than `to`, stop below `from`.
            let mut out = Vec::new();
            for row in AuditChain::from_head(r, meter_id)? {
                let (_, a) = row?;
                if a.at < from {
                    break;
                }
                if a.at <= to {
                    out.push(a);
                }
            }
            out.reverse();
            out.truncate(limit);
            Ok(out)
        })
    }

    fn audit_page(
        &self,
        meter_id: &str,
        before: Option<&AuditCursor>,
        limit: usize,
        order_id: Option<&str>,
    ) -> Result<(Vec<AuditEvent>, Option<AuditCursor>), StoreError> {
        self.read(|r| {
            let chain = match before {
                None => AuditChain::from_head(r, meter_id)?,
                // The cursor names the last row of the previous page: continue below it, if it
                // is a row of this meter; any other cursor is a position in time.
                Some(c) => AuditChain::below(r, meter_id, c)?,
            };
            let mut out = Vec::new();
            let mut last = None;
            for row in chain {
                let (cursor, a) = row?;
                if out.len() == limit {
                    return Ok((out, last));
                }
                if order_id.is_none_or(|o| a.order_id.as_deref() == Some(o)) {
                    out.push(a);
                    last = Some(cursor);
                }
            }
            Ok((out, None))
        })
    }

    fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.read(|r| {
            let t = r.open_table(OUTBOX).map_err(be)?;
            let mut out = Vec::new();
            // Whole rows: a caller acknowledges a row once it has delivered every entry it
            // was given of it, so a row cut short would be deleted with entries never sent.
            for item in t.iter().map_err(be)? {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = item.map_err(be)?;
                out.extend(decode_outbox_row(k.value(), v.value())?);
            }
            Ok(out)
        })
    }

    fn counts(&self) -> Result<StoreCounts, StoreError> {
        self.read(|r| {
            let meta = r.open_table(META).map_err(be)?;
            let count = |k: &str| -> Result<u64, StoreError> {
                Ok(meta.get(k).map_err(be)?.map_or(0, |v| v.value()))
            };
            Ok(StoreCounts {
                orders: r.open_table(ORDERS).map_err(be)?.len().map_err(be)?,
                open_orders: count(OPEN_COUNT)?,
                meters: count(METERS_COUNT)?,
                commands: r.open_table(COMMANDS).map_err(be)?.len().map_err(be)?,
                audit_events: r.open_table(AUDIT_LOG).map_err(be)?.len().map_err(be)?
                    + count(AUDIT_EXTRA)?,
                exceptions: r.open_table(EXCEPTIONS).map_err(be)?.len().map_err(be)?,
                outbox: {
                    let t = r.open_table(OUTBOX).map_err(be)?;
                    let mut n = 0;
                    for item in t.iter().map_err(be)? {
                        n += outbox_row_entries(item.map_err(be)?.1.value());
                    }
                    n
                },
            })
        })
    }
}

/// An open order's status as of its newest status row in its meter's audit chain (the record
/// keeps the status it was received with until the order ends). The reason is the newest one
/// given, as a rewrite of the record on each change kept it.
fn current_status(r: &redb::ReadTransaction, rec: &mut OrderRecord) -> Result<(), StoreError> {
    let id = rec.order.order_id.as_str();
    let mut found = false;
    for row in AuditChain::from_head(r, &rec.order.meter_id)? {
        let (_, a) = row?;
        if a.at < rec.received_at {
            break; // older than the order
        }
        if a.order_id.as_deref() != Some(id) {
            continue;
        }
        let Some(status) = a.status else { continue };
        if !found {
            found = true;
            rec.status = status;
            rec.updated_at = a.at;
        }
        if a.reason.is_some() {
            rec.reason = a.reason;
            break;
        }
    }
    Ok(())
}

/// One meter's audit rows, newest first, following the chain of previous-row pointers.
struct AuditChain<'m> {
    log: redb::ReadOnlyTable<u64, &'static [u8]>,
    meter_id: &'m str,
    next: u64,
    /// Rows at or above this position are skipped (a cursor that names no row of this meter:
    /// a point in time, such as the upper bound of `/api/v1/meters/{id}/audit`).
    below: Option<AuditCursor>,
}

impl<'m> AuditChain<'m> {
    fn from_head(r: &redb::ReadTransaction, meter_id: &'m str) -> Result<Self, StoreError> {
        let pm = r.open_table(PER_METER).map_err(be)?;
        let next = match pm.get(per_meter::head(meter_id).as_str()).map_err(be)? {
            Some(v) => per_meter::head_of(meter_id, v.value())?,
            None => 0,
        };
        Ok(AuditChain {
            log: r.open_table(AUDIT_LOG).map_err(be)?,
            meter_id,
            next,
            below: None,
        })
    }

    /// The rows after (older than) the row a cursor names, when that row is this meter's.
    fn below(
        r: &redb::ReadTransaction,
        meter_id: &'m str,
        c: &AuditCursor,
    ) -> Result<Self, StoreError> {
        let mut chain = AuditChain {
            log: r.open_table(AUDIT_LOG).map_err(be)?,
            meter_id,
            next: c.seq,
            below: None,
        };
        match chain.row(c.seq)? {
            Some((prev, a)) if a.at.as_nanosecond() as i64 as u64 == c.at_ns => {
                chain.next = prev;
                Ok(chain)
            }
            // Not a row of this meter: a position in time; walk down from the newest row.
            _ => {
                let mut chain = AuditChain::from_head(r, meter_id)?;
                chain.below = Some(*c);
                Ok(chain)
            }
        }
    }

    /// The event numbered `seq` and its predecessor, when it is an event of this meter.
    fn row(&self, seq: u64) -> Result<Option<(u64, AuditEvent)>, StoreError> {
        let found = audit_entry(&self.log, seq, |e| {
            let a: AuditEvent = decode(&format!("audit/{seq}"), e.json)?;
            Ok((e.prev, a))
        })?;
        Ok(found.filter(|(_, a)| a.meter_id == self.meter_id))
    }
}

impl Iterator for AuditChain<'_> {
    type Item = Result<(AuditCursor, AuditEvent), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.next == 0 {
                return None;
            }
            let seq = self.next;
            match self.row(seq) {
                Ok(Some((prev, a))) => {
                    self.next = prev;
                    let cursor = AuditCursor {
                        at_ns: a.at.as_nanosecond() as i64 as u64,
                        seq,
                    };
                    if let Some(b) = self.below {
                        if (cursor.at_ns, cursor.seq) >= (b.at_ns, b.seq) {
                            continue;
                        }
                        self.below = None;
                    }
                    return Some(Ok((cursor, a)));
                }
                Ok(None) => {
                    self.next = 0;
                    return Some(Err(StoreError::Corrupt {
                        key: format!("audit/{seq}"),
                        message: format!(
                            "the audit chain of meter {} is broken here",
                            self.meter_id
                        ),
                    }));
                }
                Err(e) => {
                    self.next = 0;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(n: u32) -> WriteBatch {
        let at = jiff::Timestamp::from_second(1_800_000_000 + i64::from(n)).unwrap();
        WriteBatch {
            audit: vec![AuditEvent::new(
                "M-1",
                at,
                crate::domain::AuditKind::StatusChange,
            )],
            outbox: vec![OutboxMessage::new("events", "M-1", vec![n as u8])],
            ..Default::default()
        }
    }

    /// The file at `path` as switchyard of format 4 wrote it: a meter's snapshot, open orders
    /// and audit head in tables of their own, no counters.
    fn as_format_4(path: &Path) {
        let db = Database::create(path).unwrap();
        let w = db.begin_write().unwrap();
        {
            let pm = w.open_table(PER_METER).unwrap();
            let mut meters = w.open_table(METERS).unwrap();
            let mut open = w.open_table(OPEN).unwrap();
            let mut heads = w.open_table(AUDIT_HEAD).unwrap();
            for item in pm.iter().unwrap() {
                let (k, v) = item.unwrap();
                let (meter, rest) = k.value().split_once('\0').unwrap();
                match rest.as_bytes()[0] {
                    1 => meters.insert(meter, v.value()).map(|_| ()),
                    2 => open
                        .insert(format!("{meter}\0{}", &rest[1..]).as_str(), ())
                        .map(|_| ()),
                    3 => heads
                        .insert(meter, per_meter::head_of(meter, v.value()).unwrap())
                        .map(|_| ()),
                    other => panic!("kind {other}"),
                }
                .unwrap();
            }
            // Format 4 wrote one row per audit event (`[prev u64][JSON]`): unpack the rows
            // format 6 packed, so that the upgrade reads the old rows as they were.
            let mut log = w.open_table(AUDIT_LOG).unwrap();
            let packed: Vec<(u64, u64)> = log
                .iter()
                .unwrap()
                .map(|i| i.unwrap())
                .filter(|(_, v)| v.value().first() == Some(&AUDIT_PACKED))
                .map(|(k, v)| {
                    let n = u32::from_be_bytes(v.value()[1..AUDIT_PACKED_HEAD].try_into().unwrap());
                    (k.value(), u64::from(n))
                })
                .collect();
            for (row, n) in packed {
                let events: Vec<(u64, Vec<u8>)> = (row..row + n)
                    .map(|seq| {
                        let one = audit_entry(&log, seq, |e| {
                            let mut one = e.prev.to_be_bytes().to_vec();
                            one.extend_from_slice(e.json);
                            Ok(one)
                        });
                        (seq, one.unwrap().unwrap())
                    })
                    .collect();
                log.remove(row).unwrap();
                for (seq, one) in events {
                    log.insert(seq, one.as_slice()).unwrap();
                }
            }
            let mut meta = w.open_table(META).unwrap();
            meta.remove(METERS_COUNT).unwrap();
            meta.remove(OPEN_COUNT).unwrap();
            meta.remove(AUDIT_EXTRA).unwrap();
            meta.insert("format", 4).unwrap();
        }
        w.delete_table(PER_METER).unwrap();
        w.commit().unwrap();
    }

    /// The store format the file at `s` says it has.
    fn stored_format(s: &EmbeddedStore) -> Option<u64> {
        s.read(|r| {
            Ok(r.open_table(META)
                .map_err(be)?
                .get("format")
                .map_err(be)?
                .map(|v| v.value()))
        })
        .unwrap()
    }

    /// Every event of `meter`'s trail, newest first, through pages of `limit`.
    fn paged(s: &EmbeddedStore, meter: &str, limit: usize) -> Vec<AuditEvent> {
        let (mut out, mut cursor) = (Vec::new(), None);
        loop {
            let (page, next) = s.audit_page(meter, cursor.as_ref(), limit, None).unwrap();
            assert!(page.len() <= limit);
            out.extend(page);
            match next {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }

    /// Format 6 packs the audit events of one write in one row. A file of format 5 keeps its
    /// rows of one event each, and a meter's new events join the same chain: the trail, its
    /// pages and the counts see one trail, whatever row each event lies in.
    #[test]
    fn a_format_5_files_audit_rows_are_read_on_the_same_chain_as_packed_ones() {
        use crate::domain::AuditKind;
        use crate::store::contract::at;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("switchyard.redb");
        let ev = |m: &str, t: i64| {
            AuditEvent::new(m, at(t), AuditKind::StatusChange).order(&format!("SO-{t}"))
        };
        drop(EmbeddedStore::open(dir.path()).unwrap());
        // As switchyard of format 5 wrote them: M-1's events 1-3 (rows 1-3), M-2's event 4.
        {
            let db = Database::create(&file).unwrap();
            let w = db.begin_write().unwrap();
            {
                let mut log = w.open_table(AUDIT_LOG).unwrap();
                let mut pm = w.open_table(PER_METER).unwrap();
                let old = [
                    (1u64, 0u64, "M-1"),
                    (2, 1, "M-1"),
                    (3, 2, "M-1"),
                    (4, 0, "M-2"),
                ];
                for (seq, prev, m) in old {
                    let mut row = prev.to_be_bytes().to_vec();
                    serde_json::to_writer(&mut row, &ev(m, seq as i64)).unwrap();
                    log.insert(seq, row.as_slice()).unwrap();
                }
                for (m, head) in [("M-1", 3u64), ("M-2", 4)] {
                    pm.insert(
                        per_meter::head(m).as_str(),
                        &per_meter::head_value(head)[..],
                    )
                    .unwrap();
                }
                let mut meta = w.open_table(META).unwrap();
                meta.insert("seq", 4).unwrap();
                meta.insert("format", 5).unwrap();
            }
            w.commit().unwrap();
        }
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let format = stored_format(&s);
        assert_eq!(format, Some(6), "upgraded when opened");
        // A cursor handed out before the upgrade (on the old row 2) still resumes.
        let (_, old_cursor) = s.audit_page("M-1", None, 2, None).unwrap();
        let (rest, _) = s.audit_page("M-1", old_cursor.as_ref(), 10, None).unwrap();
        assert_eq!(rest, vec![ev("M-1", 1)]);
        s.apply(&[
            WriteBatch {
                audit: vec![ev("M-1", 5), ev("M-2", 6), ev("M-1", 7)],
                ..Default::default()
            },
            WriteBatch {
                audit: vec![ev("M-1", 8)],
                ..Default::default()
            },
        ])
        .unwrap();
        s.apply(&[WriteBatch {
            audit: vec![ev("M-1", 9), ev("M-1", 10)],
            ..Default::default()
        }])
        .unwrap();
        let m1: Vec<AuditEvent> = [1, 2, 3, 5, 7, 8, 9, 10].map(|t| ev("M-1", t)).into();
        assert_eq!(
            s.audit("M-1").unwrap(),
            m1,
            "oldest first, old rows and packed ones"
        );
        assert_eq!(s.audit("M-2").unwrap(), vec![ev("M-2", 4), ev("M-2", 6)]);
        let newest_first: Vec<AuditEvent> = m1.iter().rev().cloned().collect();
        for limit in 1..=4 {
            assert_eq!(paged(&s, "M-1", limit), newest_first, "pages of {limit}");
        }
        // A page that starts inside a packed row, by time.
        let (page, _) = s
            .audit_page("M-1", Some(&AuditCursor::below_or_at(at(7))), 2, None)
            .unwrap();
        assert_eq!(page, vec![ev("M-1", 7), ev("M-1", 5)]);
        assert_eq!(
            s.audit_between("M-1", at(3), at(8), 10).unwrap(),
            [3, 5, 7, 8].map(|t| ev("M-1", t)).to_vec()
        );
        let rows = s
            .read(|r| r.open_table(AUDIT_LOG).map_err(be)?.len().map_err(be))
            .unwrap();
        assert_eq!(rows, 4 + 2, "one row per write since the upgrade");
        assert_eq!(
            s.counts().unwrap().audit_events,
            4 + 4 + 2,
            "counted by event"
        );
    }

    /// A write of more events than one packed row holds spreads them over rows, numbered on;
    /// a damaged packed row is an error that names it, never a panic.
    #[test]
    fn a_large_write_packs_its_audit_events_in_bounded_rows_and_a_damaged_one_is_an_error() {
        use crate::domain::AuditKind;
        use crate::store::contract::at;
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let n = AUDIT_PACKED_MAX + 44;
        let ev = |i: usize| {
            AuditEvent::new(
                &format!("M-{}", i % 3),
                at(i as i64),
                AuditKind::StatusChange,
            )
        };
        s.apply(&[WriteBatch {
            audit: (0..n).map(ev).collect(),
            ..Default::default()
        }])
        .unwrap();
        let rows = s
            .read(|r| r.open_table(AUDIT_LOG).map_err(be)?.len().map_err(be))
            .unwrap();
        assert_eq!(rows, 2);
        assert_eq!(s.counts().unwrap().audit_events, n as u64);
        for m in 0..3 {
            let want: Vec<AuditEvent> = (0..n).filter(|i| i % 3 == m).map(ev).collect();
            let meter = format!("M-{m}");
            assert_eq!(s.audit(&meter).unwrap(), want);
            let newest_first: Vec<AuditEvent> = want.into_iter().rev().collect();
            assert_eq!(paged(&s, &meter, 7), newest_first);
        }
        // Damaged on disk, the first row: each case an error that names the row, never a
        // panic, and never a reader going round in a loop.
        type Damage = fn(&mut Vec<u8>, u64);
        let cases: [(&str, Damage); 3] = [
            ("damaged", |row, _| row.truncate(40)),
            ("counts more events", |row, _| {
                row[1..5].copy_from_slice(&u32::MAX.to_be_bytes())
            }),
            // Its first event (M-0's first) names itself as its predecessor.
            ("as its predecessor", |row, key| {
                row[5..13].copy_from_slice(&key.to_be_bytes())
            }),
        ];
        // Rewrites the first audit row; returns what it held.
        let rewrite = |f: &dyn Fn(&mut Vec<u8>, u64)| {
            let g = s.db.read().unwrap();
            let w = g.as_ref().unwrap().begin_write().unwrap();
            let old = {
                let mut log = w.open_table(AUDIT_LOG).unwrap();
                let (k, old) = {
                    let (k, v) = log.first().unwrap().unwrap();
                    (k.value(), v.value().to_vec())
                };
                let mut new = old.clone();
                f(&mut new, k);
                log.insert(k, new.as_slice()).unwrap();
                old
            };
            w.commit().unwrap();
            old
        };
        for (what, damage) in cases {
            let good = rewrite(&damage);
            let e = s.audit("M-0").unwrap_err().to_string();
            assert!(e.contains("audit/") && e.contains(what), "{what}: {e}");
            rewrite(&|row, _| *row = good.clone());
            assert_eq!(s.audit("M-0").unwrap().len(), n.div_ceil(3), "restored");
        }
    }

    #[test]
    fn a_damaged_audit_head_is_an_error_not_a_new_chain_and_other_meters_go_on() {
        use crate::domain::AuditKind;
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let row = |m: &str, n: i64| {
            AuditEvent::new(m, crate::store::contract::at(n), AuditKind::StatusChange)
        };
        let one = |m: &str, n: i64| WriteBatch {
            audit: vec![row(m, n)],
            ..Default::default()
        };
        s.apply(&[one("M-1", 1)]).unwrap();
        s.apply(&[one("M-2", 1)]).unwrap();
        // M-1's head damaged on disk (three bytes instead of eight).
        {
            let g = s.db.read().unwrap();
            let w = g.as_ref().unwrap().begin_write().unwrap();
            w.open_table(PER_METER)
                .unwrap()
                .insert(per_meter::head("M-1").as_str(), &[1u8, 2, 3][..])
                .unwrap();
            w.commit().unwrap();
        }
        let read = s.audit("M-1").unwrap_err().to_string();
        assert!(read.contains("audit head of 3 bytes"), "{read}");
        let write = s.apply(&[one("M-1", 2)]).unwrap_err().to_string();
        assert!(write.contains("audit head of 3 bytes"), "{write}");
        s.apply(&[one("M-2", 2)]).unwrap();
        assert_eq!(
            s.audit("M-2").unwrap().len(),
            2,
            "another meter's trail goes on"
        );
    }

    #[test]
    fn a_format_4_file_is_upgraded_and_its_log_still_replays() {
        use crate::domain::{AuditKind, InFlight, Purpose};
        use crate::store::contract::{accepted, at, command};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("switchyard.redb");
        let mut busy = MeterState::new("M-7");
        busy.in_flight = Some(Box::new(InFlight {
            command: command("SO-7/1", "SO-7", "M-7", 3),
            purpose: Purpose::Execute,
        }));
        let idle = MeterState::new("M-8");
        let received =
            |m: &str, o: &str, s: i64| AuditEvent::new(m, at(s), AuditKind::StatusChange).order(o);
        let reads = |s: &EmbeddedStore| {
            (
                s.meter("M-7").unwrap(),
                s.meter("M-8").unwrap(),
                s.open_orders("M-1").unwrap(),
                s.open_orders("M-10").unwrap(),
                s.audit("M-1").unwrap(),
                s.meters_with_open_work().unwrap(),
                s.counts().unwrap(),
            )
        };
        let before = {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            s.apply(&[
                WriteBatch {
                    new_orders: vec![
                        accepted("SO-1", "M-1", 1),
                        accepted("SO-2", "M-1", 2),
                        accepted("SO-3", "M-10", 3),
                    ],
                    audit: vec![
                        received("M-1", "SO-1", 1),
                        received("M-1", "SO-2", 2),
                        received("M-10", "SO-3", 3),
                    ],
                    meter: Some(busy.clone()),
                    ..Default::default()
                },
                WriteBatch {
                    meter: Some(idle.clone()),
                    ..Default::default()
                },
            ])
            .unwrap();
            reads(&s)
        };
        assert_eq!(before.0, Some(busy));
        assert_eq!(before.1, Some(idle));
        assert_eq!(before.2.len(), 2);
        assert_eq!(before.4.len(), 2);
        assert_eq!(
            before.5,
            ["M-1", "M-10", "M-7"],
            "by open order or busy snapshot, M-8 idle"
        );
        assert_eq!((before.6.meters, before.6.open_orders), (2, 3));

        as_format_4(&file);
        // The log as switchyard of format 4 left it after a kill: one record past the file,
        // in the old tables' numbers (M-9 and its order arrive; SO-2 ends).
        let wal_lsn = {
            let db = Database::create(&file).unwrap();
            let r = db.begin_read().unwrap();
            let meta = r.open_table(META).unwrap();
            let v = meta.get(WAL_LSN).unwrap().map_or(0, |v| v.value());
            let log = r.open_table(AUDIT_LOG).unwrap();
            let firsts: Vec<u8> = log
                .iter()
                .unwrap()
                .map(|i| i.unwrap().1.value()[0])
                .collect();
            assert_eq!(
                firsts,
                [0, 0, 0],
                "one row per event, as format 4 wrote them"
            );
            v
        };
        let m9 = MeterState::new("M-9");
        {
            let mut ops = Ops::default();
            ops.insert(
                table_id::ORDERS,
                b"SO-9",
                &encode(&accepted("SO-9", "M-9", 9)),
            );
            ops.insert(table_id::OPEN, b"M-9\0SO-9", &[]);
            ops.insert(table_id::METERS, b"M-9", &encode(&m9));
            ops.insert(table_id::AUDIT_HEAD, b"M-9", &5u64.to_le_bytes());
            ops.remove(table_id::OPEN, b"M-1\0SO-2");
            let (mut wal, _) = Wal::open(&Wal::path_for(&file)).unwrap();
            wal.append(wal_lsn + 1, ops.as_bytes()).unwrap();
        }

        let s = EmbeddedStore::open(dir.path()).unwrap();
        let (format, old_tables, head) = s
            .read(|r| {
                let format = r.open_table(META).map_err(be)?.get("format").map_err(be)?;
                let head = r
                    .open_table(PER_METER)
                    .map_err(be)?
                    .get(per_meter::head("M-9").as_str())
                    .map_err(be)?
                    .map(|v| per_meter::head_of("M-9", v.value()).unwrap());
                let old = r.list_tables().map_err(be)?.filter(|t| {
                    ["meters", "open_orders", "audit_head"].contains(&redb::TableHandle::name(t))
                });
                Ok((format.map(|v| v.value()), old.count(), head))
            })
            .unwrap();
        assert_eq!(format, Some(FORMAT), "upgraded when opened");
        assert_eq!(old_tables, 0, "the old tables are gone");
        assert_eq!(head, Some(5), "the old log's head moved with it");
        let after = reads(&s);
        assert_eq!(
            (&after.0, &after.1, &after.3, &after.4),
            (&before.0, &before.1, &before.3, &before.4)
        );
        assert_eq!(
            after.2,
            vec![accepted("SO-1", "M-1", 1)],
            "the log's removal replayed"
        );
        assert_eq!(s.meter("M-9").unwrap(), Some(m9));
        assert_eq!(
            s.open_orders("M-9").unwrap(),
            vec![accepted("SO-9", "M-9", 9)]
        );
        assert_eq!(after.5, ["M-1", "M-10", "M-7", "M-9"]);
        assert_eq!(
            (after.6.meters, after.6.open_orders),
            (3, 3),
            "counted from the copy, then by the log's changes"
        );
    }

    #[test]
    fn a_transactions_outbox_entries_are_one_row_and_rows_written_one_per_entry_still_read() {
        let dir = tempfile::tempdir().unwrap();
        // A file of format 3 with a row of one entry, as the store wrote every entry before
        // packets (key = its number).
        let old = OutboxMessage::new("events", "M-0", b"old".to_vec());
        {
            let db = Database::create(dir.path().join("switchyard.redb")).unwrap();
            let w = db.begin_write().unwrap();
            {
                let mut t = w.open_table(OUTBOX).unwrap();
                let mut v = Vec::new();
                encode_outbox_into(&mut v, &old);
                t.insert(1, v.as_slice()).unwrap();
                let mut meta = w.open_table(META).unwrap();
                meta.insert("seq", 1).unwrap();
                meta.insert("format", 3).unwrap();
            }
            w.commit().unwrap();
        }
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let format = stored_format(&s);
        assert_eq!(format, Some(FORMAT), "upgraded when opened");
        let entries = s.apply(&[step(1), step(2), step(3)]).unwrap();
        assert_eq!(entries.len(), 3);
        assert!(entries.iter().all(|e| e.packet == entries[0].packet));
        assert_eq!(
            entries[0].packet, entries[0].seq,
            "named by its first entry"
        );
        let rows = s
            .read(|r| Ok(r.open_table(OUTBOX).map_err(be)?.len().map_err(be)?))
            .unwrap();
        assert_eq!(rows, 2, "the old entry's row and one packet");
        assert_eq!(s.counts().unwrap().outbox, 4, "counted by entry");
        let stored = s.outbox(100).unwrap();
        assert_eq!(stored[0].message, old);
        assert_eq!((stored[0].seq, stored[0].packet), (1, 1));
        assert_eq!(
            &stored[1..],
            entries.as_slice(),
            "in order, with their numbers"
        );
        s.apply(&[WriteBatch {
            outbox_acked: vec![1],
            ..Default::default()
        }])
        .unwrap();
        assert_eq!(s.outbox(100).unwrap(), entries);
        s.apply(&[WriteBatch {
            outbox_acked: vec![entries[0].packet],
            ..Default::default()
        }])
        .unwrap();
        assert!(s.outbox(100).unwrap().is_empty());
        assert_eq!(s.counts().unwrap().outbox, 0);
        // A packed row cut short is an error that names it, not a panic.
        let mut v = vec![PACKET];
        v.extend_from_slice(&7u64.to_be_bytes());
        v.extend_from_slice(&100u32.to_be_bytes());
        v.extend_from_slice(b"short");
        let err = decode_outbox_row(7, &v).unwrap_err().to_string();
        assert!(err.contains("outbox/7"), "{err}");
        assert_eq!(outbox_row_entries(&v), 1);
    }

    /// What a `kill -9` leaves of the store directory, taken while the store is open: the
    /// files as the operating system holds them (redb's unsynced commits are in its own
    /// memory, not in the file). `log`: with the write-ahead log file.
    fn crash_image(from: &Path, log: bool) -> tempfile::TempDir {
        let to = tempfile::tempdir().unwrap();
        std::fs::copy(
            from.join("switchyard.redb"),
            to.path().join("switchyard.redb"),
        )
        .unwrap();
        if log {
            std::fs::copy(
                from.join("switchyard.wal"),
                to.path().join("switchyard.wal"),
            )
            .unwrap();
            if from.join("switchyard.wal.old").exists() {
                std::fs::copy(
                    from.join("switchyard.wal.old"),
                    to.path().join("switchyard.wal.old"),
                )
                .unwrap();
            }
        }
        to
    }

    impl EmbeddedStore {
        fn checkpoint_now(&self) {
            let g = self.db.read().unwrap();
            self.checkpoint_applied(g.as_ref().unwrap()).unwrap();
        }
    }

    #[test]
    fn logged_writes_are_acknowledged_before_the_file_holds_them_and_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert!(s.begin_logging());
        for n in 0..20 {
            s.log(vec![step(n)]).map_err(|(e, _)| e).unwrap();
        }
        // No applier has run: the writes are only in the log.
        let crashed = crash_image(dir.path(), true);
        let crashed_without_log = crash_image(dir.path(), false);
        let back = EmbeddedStore::open(crashed.path()).unwrap();
        assert_eq!(
            back.audit("M-1").unwrap().len(),
            20,
            "every logged write is back"
        );
        let seqs: Vec<u64> = back.outbox(100).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs.len(), 20);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let lost = EmbeddedStore::open(crashed_without_log.path()).unwrap();
        assert_eq!(
            lost.audit("M-1").unwrap().len(),
            0,
            "the log is what kept them"
        );
        // The applier puts them in the file, in order, with the same numbers as the replay.
        let entries = s.apply_logged().unwrap().unwrap();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
        assert_eq!(s.audit("M-1").unwrap().len(), 20);
    }

    #[test]
    fn a_read_sees_every_write_logged_before_it_while_the_applier_runs_behind() {
        let dir = tempfile::tempdir().unwrap();
        let s = std::sync::Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        assert!(s.begin_logging());
        let applier = {
            let s = s.clone();
            std::thread::spawn(move || {
                while let Some(r) = s.apply_logged() {
                    r.unwrap();
                }
            })
        };
        for n in 0..50 {
            let mut b = step(n);
            b.meter = Some(MeterState::new(format!("M-{n}").as_str()));
            s.log(vec![b]).map_err(|(e, _)| e).unwrap();
            // The meter's own read waits for its record; any other read for all before it.
            assert!(s.meter(&format!("M-{n}")).unwrap().is_some(), "meter M-{n}");
            assert_eq!(s.audit("M-1").unwrap().len(), n as usize + 1);
        }
        s.end_logging();
        applier.join().unwrap();
    }

    #[test]
    fn records_the_file_holds_already_are_not_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert!(s.begin_logging());
        for n in 0..3 {
            s.log(vec![step(n)]).map_err(|(e, _)| e).unwrap();
        }
        let b = s.backlog.get().unwrap();
        let taken = b.take().unwrap();
        assert_eq!(s.apply_records(b, taken.clone()).unwrap().len(), 3);
        // The same records once more, as after a commit that failed and was durable after all.
        assert!(s.apply_records(b, taken).unwrap().is_empty());
        assert_eq!(s.audit("M-1").unwrap().len(), 3);
        assert_eq!(s.outbox(100).unwrap().len(), 3);
    }

    #[test]
    fn a_reopen_after_an_io_error_keeps_every_logged_write_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert!(s.begin_logging());
        for n in 0..5 {
            s.log(vec![step(n)]).map_err(|(e, _)| e).unwrap();
        }
        s.apply_logged().unwrap().unwrap();
        for n in 5..8 {
            s.log(vec![step(n)]).map_err(|(e, _)| e).unwrap();
        }
        // As after a failed transaction: the next one reopens the file first.
        s.broken.store(true, std::sync::atomic::Ordering::SeqCst);
        s.apply_logged().unwrap().unwrap();
        assert_eq!(s.audit("M-1").unwrap().len(), 8);
        let seqs: Vec<u64> = s.outbox(100).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs.len(), 8);
        // And a crash now: the log and the file together still hold each write once.
        let crashed = crash_image(dir.path(), true);
        let back = EmbeddedStore::open(crashed.path()).unwrap();
        assert_eq!(back.audit("M-1").unwrap().len(), 8);
    }

    #[test]
    fn a_log_left_only_under_its_older_name_is_replayed_even_with_the_log_off() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert!(s.begin_logging());
        for n in 0..4 {
            s.log(vec![step(n)]).map_err(|(e, _)| e).unwrap();
        }
        // A crash between setting the log aside and starting the new one.
        let crashed = crash_image(dir.path(), true);
        std::fs::rename(
            crashed.path().join("switchyard.wal"),
            crashed.path().join("switchyard.wal.old"),
        )
        .unwrap();
        let back = EmbeddedStore::open_with(
            crashed.path(),
            Shard::ONLY,
            std::time::Duration::ZERO,
            DEFAULT_CACHE_BYTES,
            false,
        )
        .unwrap();
        assert_eq!(back.audit("M-1").unwrap().len(), 4);
        assert!(!crashed.path().join("switchyard.wal.old").exists());
    }

    #[test]
    fn a_checkpoint_while_the_logger_runs_on_keeps_the_records_the_file_does_not_hold() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert!(s.begin_logging());
        let log = |from: u32, to: u32| {
            for n in from..to {
                s.log(vec![step(n)]).map_err(|(e, _)| e).unwrap();
            }
        };
        log(0, 10);
        s.apply_logged().unwrap().unwrap();
        log(10, 15);
        // The file holds 0-9: the log's records so far are set aside, not dropped.
        s.checkpoint_now();
        assert!(dir.path().join("switchyard.wal.old").exists());
        log(15, 20);
        let crashed = crash_image(dir.path(), true);
        let back = EmbeddedStore::open(crashed.path()).unwrap();
        assert_eq!(back.audit("M-1").unwrap().len(), 20);
        drop(back);
        // Once the file holds everything, a checkpoint leaves no log behind.
        s.apply_logged().unwrap().unwrap();
        s.checkpoint_now();
        assert!(!dir.path().join("switchyard.wal.old").exists());
        assert_eq!(
            std::fs::metadata(dir.path().join("switchyard.wal"))
                .unwrap()
                .len(),
            0
        );
        assert_eq!(s.audit("M-1").unwrap().len(), 20);
    }

    #[test]
    fn writes_acknowledged_since_the_last_checkpoint_survive_a_crash_through_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        for n in 0..40 {
            s.apply(&[step(n)]).unwrap();
        }
        let crashed = crash_image(dir.path(), true);
        let crashed_without_log = crash_image(dir.path(), false);
        drop(s);

        let back = EmbeddedStore::open(crashed.path()).unwrap();
        assert_eq!(
            back.audit("M-1").unwrap().len(),
            40,
            "every acknowledged write is back"
        );
        assert_eq!(back.outbox(100).unwrap().len(), 40);
        // The image really is a crash: without its log, redb alone has none of them.
        let lost = EmbeddedStore::open(crashed_without_log.path()).unwrap();
        assert!(
            lost.audit("M-1").unwrap().len() < 40,
            "the log is what kept them"
        );
        // After the replay the log numbers on: a later write and a clean restart keep all.
        back.apply(&[step(40)]).unwrap();
        let seqs: Vec<u64> = back.outbox(100).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs.len(), 41);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        drop(back);
        let again = EmbeddedStore::open(crashed.path()).unwrap();
        assert_eq!(again.audit("M-1").unwrap().len(), 41);
    }

    /// The steps of a few meters' orders, as the intake and the meters write them: orders
    /// accepted (one meter with two), snapshots stored, one order ended, one meter's snapshot
    /// written again. Exercises every kind of `per_meter` row and both counters.
    fn meter_steps() -> Vec<WriteBatch> {
        use crate::domain::{AuditKind, OrderStatus};
        use crate::store::contract::{accepted, at};
        let received =
            |m: &str, o: &str, s: i64| AuditEvent::new(m, at(s), AuditKind::OrderReceived).order(o);
        let mut steps = vec![WriteBatch {
            new_orders: vec![
                accepted("SO-1", "M-1", 1),
                accepted("SO-2", "M-1", 2),
                accepted("SO-3", "M-2", 3),
                accepted("SO-4", "M-3", 4),
            ],
            audit: vec![
                received("M-1", "SO-1", 1),
                received("M-1", "SO-2", 2),
                received("M-2", "SO-3", 3),
                received("M-3", "SO-4", 4),
            ],
            ..Default::default()
        }];
        for (m, s) in [("M-1", 5), ("M-2", 6), ("M-3", 7), ("M-4", 8)] {
            steps.push(WriteBatch {
                meter: Some(MeterState::new(m)),
                audit: vec![AuditEvent::new(m, at(s), AuditKind::StatusChange)],
                ..Default::default()
            });
        }
        steps.push(WriteBatch {
            order_updates: vec![crate::store::OrderUpdate {
                order_id: "SO-3".into(),
                meter_id: "M-2".into(),
                status: OrderStatus::Completed,
                reason: None,
                at: at(9),
            }],
            meter: Some(MeterState::new("M-2")),
            audit: vec![AuditEvent::new("M-2", at(9), AuditKind::StatusChange).order("SO-3")],
            ..Default::default()
        });
        steps
    }

    /// What a restart reads of the meters (`meter_steps`), to compare before and after a
    /// crash.
    fn meter_reads(s: &EmbeddedStore) -> (Vec<String>, u64, u64, Vec<usize>, Vec<usize>) {
        let c = s.counts().unwrap();
        let meters = ["M-1", "M-2", "M-3", "M-4"];
        (
            s.meters_with_open_work().unwrap(),
            c.meters,
            c.open_orders,
            meters
                .iter()
                .map(|m| s.open_orders(m).unwrap().len())
                .collect(),
            meters.iter().map(|m| s.audit(m).unwrap().len()).collect(),
        )
    }

    #[test]
    fn the_meter_counts_and_rows_come_back_whole_from_a_replay_of_either_log() {
        let expected = (
            vec!["M-1".to_string(), "M-3".to_string()],
            4,
            3,
            vec![2, 0, 1, 0],
            vec![3, 3, 2, 1],
        );
        // Each write in its own transaction, logged as the bytes it changed.
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        for b in meter_steps() {
            s.apply(&[b]).unwrap();
        }
        assert_eq!(meter_reads(&s), expected, "as written");
        let crashed = crash_image(dir.path(), true);
        drop(s);
        let back = EmbeddedStore::open(crashed.path()).unwrap();
        assert_eq!(meter_reads(&back), expected, "after the replay of the log");

        // Logged, then applied: the first three steps applied and checkpointed, the rest only
        // in the log (batches) when the process dies.
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert!(s.begin_logging());
        for (i, b) in meter_steps().into_iter().enumerate() {
            s.log(vec![b]).map_err(|(e, _)| e).unwrap();
            if i == 2 {
                s.apply_logged().unwrap().unwrap();
                s.checkpoint_now();
            }
        }
        let crashed = crash_image(dir.path(), true);
        let back = EmbeddedStore::open(crashed.path()).unwrap();
        assert_eq!(
            meter_reads(&back),
            expected,
            "after the batches written again"
        );
        drop(back);
        // The same log left by switchyard of format 4 (its batches are the same records): the
        // file is upgraded first, then the batches are written again into the new layout.
        let older = crash_image(dir.path(), true);
        as_format_4(&older.path().join("switchyard.redb"));
        let back = EmbeddedStore::open(older.path()).unwrap();
        assert_eq!(meter_reads(&back), expected, "a format-4 file and its log");
        s.apply_logged().unwrap().unwrap();
        assert_eq!(meter_reads(&s), expected, "as the applier wrote them");
    }

    /// The open-work scan's light read of a snapshot repeats `MeterState::is_idle`; the two
    /// must agree on every kind of snapshot, or a restart would resume too little (or too much).
    #[test]
    fn the_scans_light_read_of_a_snapshot_agrees_with_is_idle() {
        use crate::domain::{InFlight, OpenOrder, Purpose};
        use crate::store::contract::{accepted, command};
        let open: OpenOrder = serde_json::from_value(serde_json::json!({
            "order": accepted("SO-1", "M-1", 1).order,
            "status": "received",
            "attempts": 0,
            "status_checks": 0,
            "unknown_outcome": false,
            "seq": 1,
        }))
        .unwrap();
        let in_flight = InFlight {
            command: command("SO-1/1", "SO-1", "M-1", 3),
            purpose: Purpose::Execute,
        };
        let idle = MeterState::new("M-1");
        let mut with_open = idle.clone();
        with_open.open.push(open);
        let mut in_flight_only = idle.clone();
        in_flight_only.in_flight = Some(Box::new(in_flight));
        let mut both = with_open.clone();
        both.in_flight = in_flight_only.in_flight.clone();
        for (what, m) in [
            ("idle", &idle),
            ("an open order", &with_open),
            ("a command in flight", &in_flight_only),
            ("both", &both),
        ] {
            assert_eq!(
                snapshot_has_work("M-1", &encode(m)).unwrap(),
                !m.is_idle(),
                "{what}"
            );
        }
        assert!(
            snapshot_has_work("M-1", b"{not json").is_err(),
            "a damaged snapshot is an error, not an idle meter"
        );
    }

    #[test]
    fn a_file_killed_after_its_checkpoint_opens_without_redb_walking_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        for n in 0..10 {
            s.apply(&[step(n)]).unwrap();
        }
        {
            let g = s.db.read().unwrap();
            s.checkpoint(g.as_ref().unwrap(), true).unwrap();
        }
        for n in 10..15 {
            s.apply(&[step(n)]).unwrap();
        }
        let crashed = crash_image(dir.path(), true);
        drop(s);
        // redb calls the repair callback when it must verify the whole file and rebuild its
        // allocator state (seconds for a file of millions of meters): not after a kill, since
        // every synced commit records that state.
        let repaired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let r = repaired.clone();
            let mut b = Database::builder();
            b.set_repair_callback(move |_| r.store(true, std::sync::atomic::Ordering::SeqCst));
            b.create(crashed.path().join("switchyard.redb")).unwrap();
        }
        assert!(
            !repaired.load(std::sync::atomic::Ordering::SeqCst),
            "the open after a kill walked the whole file"
        );
        let back = EmbeddedStore::open(crashed.path()).unwrap();
        assert_eq!(back.audit("M-1").unwrap().len(), 15, "and nothing is lost");
    }

    #[test]
    fn a_checkpoint_puts_the_writes_in_the_file_itself_and_empties_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        for n in 0..10 {
            s.apply(&[step(n)]).unwrap();
        }
        let log = dir.path().join("switchyard.wal");
        assert!(std::fs::metadata(&log).unwrap().len() > 0);
        {
            let g = s.db.read().unwrap();
            s.checkpoint(g.as_ref().unwrap(), true).unwrap();
        }
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        let crashed = crash_image(dir.path(), false);
        let back = EmbeddedStore::open(crashed.path()).unwrap();
        assert_eq!(back.audit("M-1").unwrap().len(), 10);
    }

    #[test]
    fn a_large_group_commit_is_synced_by_redb_and_checkpoints_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::open(dir.path()).unwrap();
        for n in 0..5 {
            s.apply(&[step(n)]).unwrap();
        }
        let mut big = step(5);
        big.outbox[0].payload = vec![7; wal::SYNC_ABOVE_BYTES as usize];
        s.apply(&[big]).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("switchyard.wal"))
                .unwrap()
                .len(),
            0
        );
        // Logged again after it, numbered on.
        s.apply(&[step(6)]).unwrap();
        let crashed = crash_image(dir.path(), true);
        let without_log = crash_image(dir.path(), false);
        let back = EmbeddedStore::open(crashed.path()).unwrap();
        assert_eq!(back.audit("M-1").unwrap().len(), 7);
        let file_only = EmbeddedStore::open(without_log.path()).unwrap();
        assert_eq!(
            file_only.audit("M-1").unwrap().len(),
            6,
            "the large commit and everything before it are in the file itself"
        );
    }

    #[test]
    fn without_a_log_every_commit_is_synced_by_redb() {
        let dir = tempfile::tempdir().unwrap();
        let s = EmbeddedStore::try_open(dir.path(), Shard::ONLY, DEFAULT_CACHE_BYTES, false)
            .unwrap()
            .unwrap();
        for n in 0..10 {
            s.apply(&[step(n)]).unwrap();
        }
        assert!(!dir.path().join("switchyard.wal").exists());
        let crashed = crash_image(dir.path(), false);
        let back = EmbeddedStore::open(crashed.path()).unwrap();
        assert_eq!(back.audit("M-1").unwrap().len(), 10);
    }

    /// The whole store contract on one file (tests/store_contract.rs runs it on the sharded
    /// store the application opens, and on ScyllaDB).
    #[test]
    fn one_file_keeps_the_store_contract() {
        for (name, case) in crate::store::contract::CASES {
            let dir = tempfile::tempdir().unwrap();
            let s = EmbeddedStore::open(dir.path()).unwrap();
            eprintln!("contract case {name}");
            case(&s);
        }
    }

    #[test]
    fn a_file_of_the_older_audit_layout_is_refused_with_a_message() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join("switchyard.redb")).unwrap();
            let w = db.begin_write().unwrap();
            w.open_table(AUDIT_V1)
                .unwrap()
                .insert(b"M-1\0x".as_slice(), b"{}".as_slice())
                .unwrap();
            w.commit().unwrap();
        }
        let err = EmbeddedStore::try_open(dir.path(), Shard::ONLY, DEFAULT_CACHE_BYTES, true)
            .err()
            .expect("an old file opened")
            .to_string();
        assert!(
            err.contains("older switchyard") && err.contains("Move the file away"),
            "{err}"
        );
        // Format 2 (campaigns in shard 0, no control file) is refused too, naming both formats.
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join("switchyard.redb")).unwrap();
            let w = db.begin_write().unwrap();
            w.open_table(META).unwrap().insert("format", 2).unwrap();
            w.commit().unwrap();
        }
        let err = EmbeddedStore::try_open(dir.path(), Shard::ONLY, DEFAULT_CACHE_BYTES, true)
            .err()
            .expect("a format-2 file opened")
            .to_string();
        assert!(
            err.contains("store format 2") && err.contains(&format!("format {FORMAT}")),
            "{err}"
        );
    }
}

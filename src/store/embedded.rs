//! The embedded default store: one redb database file under `data_dir`. redb is an ACID,
//! copy-on-write B-tree; a commit with `Durability::Immediate` is on disk when it returns, so a
//! `kill -9` loses nothing that was acknowledged. Chosen by a measured comparison with fjall
//! (docs/architecture.md, load-tests/store-selection).

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{
    AuditCursor, CommandRecord, OutboxEntry, OutboxMessage, Store, StoreCounts, StoreError,
    WriteBatch,
};
use crate::domain::MeterState;
use crate::domain::{AuditEvent, ExceptionRecord, OrderRecord};

const ORDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("orders");
/// Key `meter_id \0 order_id`, no value: the open orders of each meter.
const OPEN: TableDefinition<&str, ()> = TableDefinition::new("open_orders");
const METERS: TableDefinition<&str, &[u8]> = TableDefinition::new("meters");
const COMMANDS: TableDefinition<&str, &[u8]> = TableDefinition::new("commands");
const EXCEPTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("exceptions");
/// The audit trail as an append-only journal: key = the store's sequence number (so every
/// commit appends at the right edge of the B-tree: sequential keys are about 10× cheaper to
/// insert than keys spread over the meters, measured in docs/architecture.md), value = the
/// sequence number of the same meter's previous row (8 bytes, big-endian; 0 = none) and the
/// row. A meter's trail is the chain from its head, newest first.
const AUDIT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_log");
/// meter id → sequence number of its newest audit row (the head of its chain).
const AUDIT_HEAD: TableDefinition<&str, u64> = TableDefinition::new("audit_head");
/// The audit layout of store format 1 (one row per `meter \0 time seq` key): a file that
/// still has rows in it was written by an older switchyard.
const AUDIT_V1: TableDefinition<&[u8], &[u8]> = TableDefinition::new("audit");
/// The store format this version writes, kept in `META` under `format` (2: the audit journal;
/// 3: campaigns and kept records in the control file of a sharded store).
const FORMAT: u64 = 3;
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
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

/// The time of the audit row at `seq` (a meter's chain head; 0 = none).
fn head_at(
    log: &redb::Table<u64, &'static [u8]>,
    seq: u64,
) -> Result<Option<jiff::Timestamp>, StoreError> {
    #[derive(serde::Deserialize)]
    struct At {
        at: jiff::Timestamp,
    }
    if seq == 0 {
        return Ok(None);
    }
    let Some(v) = log.get(seq).map_err(be)? else {
        return Ok(None);
    };
    let bytes = v.value();
    let key = || format!("audit/{seq}");
    let row = bytes.get(8..).ok_or_else(|| StoreError::Corrupt {
        key: key(),
        message: "truncated audit row".into(),
    })?;
    Ok(Some(decode::<At>(&key(), row)?.at))
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("domain types serialize")
}

fn open_key(meter: &str, order: &str) -> String {
    format!("{meter}\0{order}")
}

fn encode_outbox(m: &OutboxMessage) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + m.topic.len() + m.key.len() + m.payload.len());
    v.extend_from_slice(&(m.topic.len() as u32).to_be_bytes());
    v.extend_from_slice(m.topic.as_bytes());
    v.extend_from_slice(&(m.key.len() as u32).to_be_bytes());
    v.extend_from_slice(m.key.as_bytes());
    v.extend_from_slice(&m.payload);
    v
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
        topic,
        key,
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
        Self::open_shards(dir, of, DEFAULT_CACHE_BYTES * (of as usize + 1))
    }

    /// Opens (or creates) a store of `shards` shards in `dir` with `cache_bytes` of page cache
    /// over all its files, as `store.shards` and `store.cache_mib` ask; the application's own
    /// opener waits without blocking its runtime instead.
    pub fn open_sharded(
        dir: &Path,
        shards: u64,
        cache_bytes: usize,
    ) -> Result<std::sync::Arc<dyn super::Store>, StoreError> {
        Self::open_shards(dir, shards, cache_bytes)
    }

    /// The page cache of each file when a store of `shards` shards has `total` bytes.
    pub(crate) fn cache_per_file(total: usize, shards: u64) -> usize {
        total / (shards as usize + 1)
    }

    fn open_shards(
        dir: &Path,
        of: u64,
        cache_bytes: usize,
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
            )?));
        }
        let control = std::sync::Arc::new(Self::open_with(dir, Shard::control(of), wait, cache)?);
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
    ) -> Result<Option<EmbeddedStore>, StoreError> {
        match Self::open_with(dir, shard, std::time::Duration::ZERO, cache_bytes) {
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
    ) -> Result<EmbeddedStore, StoreError> {
        let path = dir.join(shard.file_name());
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let (db, shards) = Self::open_db(&path, Some(shard.of), wait, cache_bytes)?;
        Ok(EmbeddedStore {
            path,
            shards,
            cache_bytes,
            db: std::sync::RwLock::new(Some(db)),
            broken: std::sync::atomic::AtomicBool::new(false),
            last_reopen: std::sync::Mutex::new(None),
            leases: Default::default(),
        })
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
        let w = db.begin_write().map_err(|e| err(e.to_string()))?;
        let shards;
        {
            // Create every table so that readers never meet a missing one.
            w.open_table(ORDERS).map_err(be)?;
            w.open_table(OPEN).map_err(be)?;
            w.open_table(METERS).map_err(be)?;
            w.open_table(COMMANDS).map_err(be)?;
            w.open_table(EXCEPTIONS).map_err(be)?;
            w.open_table(AUDIT_LOG).map_err(be)?;
            w.open_table(AUDIT_HEAD).map_err(be)?;
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
                Some(FORMAT) if stored_shards.unwrap_or(1) != shards => {
                    return Err(err(format!(
                        "the data directory was written with store.shards = {}, and store.shards is {shards} now: a meter's rows would be looked for in the wrong file. Set store.shards = {} again (or move the data directory away to start empty)",
                        stored_shards.unwrap_or(1),
                        stored_shards.unwrap_or(1)
                    )))
                }
                Some(FORMAT) => {}
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
        *db = Some(fresh);
        self.broken.store(false, Ordering::SeqCst);
        tracing::info!(path = %self.path.display(), "embedded store reopened after an I/O error; writes resume");
        Ok(())
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
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

impl EmbeddedStore {
    fn apply_once(&self, batches: &[WriteBatch]) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut published = Vec::new();
        let g = self.db.read().expect("lock");
        let db = g.as_ref().ok_or_else(|| {
            StoreError::Backend("the embedded store is being reopened after an I/O error".into())
        })?;
        let w = db.begin_write().map_err(be)?;
        // Read inside the write transaction: two writers (the group-commit thread and a
        // campaign's `write_now`) must never number outbox entries alike.
        let mut seq = {
            let meta = w.open_table(META).map_err(be)?;
            let v = meta.get("seq").map_err(be)?.map(|v| v.value());
            v.unwrap_or(0)
        };

        {
            let mut orders = w.open_table(ORDERS).map_err(be)?;
            let mut open = w.open_table(OPEN).map_err(be)?;
            let mut meters = w.open_table(METERS).map_err(be)?;
            let mut commands = w.open_table(COMMANDS).map_err(be)?;
            let mut exceptions = w.open_table(EXCEPTIONS).map_err(be)?;
            let mut audit = w.open_table(AUDIT_LOG).map_err(be)?;
            let mut heads = w.open_table(AUDIT_HEAD).map_err(be)?;
            // Heads moved in this transaction (position and time), written once per meter at
            // the end.
            let mut moved: std::collections::HashMap<&str, (u64, Option<jiff::Timestamp>)> =
                std::collections::HashMap::new();
            let mut outbox = w.open_table(OUTBOX).map_err(be)?;
            let mut campaigns = w.open_table(CAMPAIGNS).map_err(be)?;
            let mut campaign_orders = w.open_table(CAMPAIGN_ORDERS).map_err(be)?;
            let mut campaign_releases = w.open_table(CAMPAIGN_RELEASES).map_err(be)?;
            let mut kept = w.open_table(KEPT).map_err(be)?;
            let mut by_receipt = w.open_table(ORDERS_BY_RECEIPT).map_err(be)?;
            let mut watch = w.open_table(READ_WATCH).map_err(be)?;
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
                            open.insert(open_key(&rec.order.meter_id, id).as_str(), ())
                                .map_err(be)?;
                        }
                    }
                }
                // (The record stays until the new meter's step stores it: the order is never
                // unknown in between, so a resend of its id is still a duplicate.)
                for (m, id) in &b.carried_away {
                    open.remove(open_key(m, id).as_str()).map_err(be)?;
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
                            open.remove(open_key(&old.order.meter_id, id).as_str())
                                .map_err(be)?;
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
                    open.insert(open_key(&rec.order.meter_id, id).as_str(), ())
                        .map_err(be)?;
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
                            open.remove(open_key(&u.meter_id, &u.order_id).as_str())
                                .map_err(be)?;
                        }
                    }
                }
                if let Some(m) = &b.meter {
                    meters
                        .insert(&*m.meter_id, encode(m).as_slice())
                        .map_err(be)?;
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
                for a in &b.audit {
                    seq += 1;
                    let (prev, prev_at) = match moved.get(a.meter_id.as_str()) {
                        Some(p) => *p,
                        None => {
                            let p = heads
                                .get(a.meter_id.as_str())
                                .map_err(be)?
                                .map_or(0, |v| v.value());
                            (p, head_at(&audit, p)?)
                        }
                    };
                    // A meter's chain is newest first by time as well as by position (paging,
                    // and the scans that stop at an order's receipt, rely on it): a row stamped
                    // a few microseconds before the row written ahead of it (the intake's
                    // `received` racing the meter actor's step) is recorded at that row's time.
                    let mut row = Vec::with_capacity(160);
                    row.extend_from_slice(&prev.to_be_bytes());
                    let at = match prev_at {
                        Some(p) if p > a.at => {
                            let mut a = a.clone();
                            a.at = p;
                            serde_json::to_writer(&mut row, &a).expect("domain types serialize");
                            p
                        }
                        _ => {
                            serde_json::to_writer(&mut row, a).expect("domain types serialize");
                            a.at
                        }
                    };
                    audit.insert(seq, row.as_slice()).map_err(be)?;
                    moved.insert(a.meter_id.as_str(), (seq, Some(at)));
                }
                for m in &b.outbox {
                    seq += 1;
                    outbox
                        .insert(seq, encode_outbox(m).as_slice())
                        .map_err(be)?;
                    published.push(OutboxEntry {
                        seq,
                        message: m.clone(),
                    });
                }
                for s in &b.outbox_acked {
                    outbox.remove(*s).map_err(be)?;
                }
            }
            let mut moved: Vec<(&str, u64)> = moved.into_iter().map(|(m, (h, _))| (m, h)).collect();
            moved.sort_unstable();
            for (meter, head) in moved {
                heads.insert(meter, head).map_err(be)?;
            }
            let mut meta = w.open_table(META).map_err(be)?;
            meta.insert("seq", seq).map_err(be)?;
        }
        w.commit().map_err(be)?;
        Ok(published)
    }
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

    fn apply(&self, batches: &[WriteBatch]) -> Result<Vec<OutboxEntry>, StoreError> {
        use std::sync::atomic::Ordering;
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
        self.read(|r| {
            let t = r.open_table(ORDERS).map_err(be)?;
            order_ids
                .iter()
                .map(|id| Ok(t.get(*id).map_err(be)?.is_some()))
                .collect()
        })
    }

    fn meter(&self, meter_id: &str) -> Result<Option<MeterState>, StoreError> {
        self.read(|r| {
            let t = r.open_table(METERS).map_err(be)?;
            let v = t.get(meter_id).map_err(be)?;
            v.map(|v| decode(meter_id, v.value())).transpose()
        })
    }

    fn open_orders(&self, meter_id: &str) -> Result<Vec<OrderRecord>, StoreError> {
        self.read(|r| {
            let open = r.open_table(OPEN).map_err(be)?;
            let orders = r.open_table(ORDERS).map_err(be)?;
            let lo = format!("{meter_id}\0");
            let hi = format!("{meter_id}\u{1}");
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
            let mut set = std::collections::BTreeSet::new();
            let open = r.open_table(OPEN).map_err(be)?;
            for item in open.iter().map_err(be)? {
                let (k, _) = item.map_err(be)?;
                if let Some((m, _)) = k.value().split_once('\0') {
                    set.insert(m.to_string());
                }
            }
            let meters = r.open_table(METERS).map_err(be)?;
            for item in meters.iter().map_err(be)? {
                let (k, v) = item.map_err(be)?;
                let m: MeterState = decode(k.value(), v.value())?;
                if !m.is_idle() {
                    set.insert(m.meter_id.to_string());
                }
            }
            Ok(set.into_iter().collect())
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
        let w = db.begin_write().map_err(be)?;
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
            for item in t.iter().map_err(be)?.take(limit) {
                let (k, v) = item.map_err(be)?;
                let seq = k.value();
                out.push(OutboxEntry {
                    seq,
                    message: decode_outbox(seq, v.value())?,
                });
            }
            Ok(out)
        })
    }

    fn counts(&self) -> Result<StoreCounts, StoreError> {
        self.read(|r| {
            Ok(StoreCounts {
                orders: r.open_table(ORDERS).map_err(be)?.len().map_err(be)?,
                open_orders: r.open_table(OPEN).map_err(be)?.len().map_err(be)?,
                meters: r.open_table(METERS).map_err(be)?.len().map_err(be)?,
                commands: r.open_table(COMMANDS).map_err(be)?.len().map_err(be)?,
                audit_events: r.open_table(AUDIT_LOG).map_err(be)?.len().map_err(be)?,
                exceptions: r.open_table(EXCEPTIONS).map_err(be)?.len().map_err(be)?,
                outbox: r.open_table(OUTBOX).map_err(be)?.len().map_err(be)?,
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
        let heads = r.open_table(AUDIT_HEAD).map_err(be)?;
        let next = heads.get(meter_id).map_err(be)?.map_or(0, |v| v.value());
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

    /// The row at `seq` and its predecessor, when it is a row of this meter.
    fn row(&self, seq: u64) -> Result<Option<(u64, AuditEvent)>, StoreError> {
        let Some(v) = self.log.get(seq).map_err(be)? else {
            return Ok(None);
        };
        let bytes = v.value();
        let key = || format!("audit/{seq}");
        if bytes.len() < 8 {
            return Err(StoreError::Corrupt {
                key: key(),
                message: "truncated audit row".into(),
            });
        }
        let prev = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let a: AuditEvent = decode(&key(), &bytes[8..])?;
        Ok((a.meter_id == self.meter_id).then_some((prev, a)))
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
        let err = EmbeddedStore::try_open(dir.path(), Shard::ONLY, DEFAULT_CACHE_BYTES)
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
        let err = EmbeddedStore::try_open(dir.path(), Shard::ONLY, DEFAULT_CACHE_BYTES)
            .err()
            .expect("a format-2 file opened")
            .to_string();
        assert!(
            err.contains("store format 2") && err.contains(&format!("format {FORMAT}")),
            "{err}"
        );
    }
}

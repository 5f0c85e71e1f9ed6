//! The write-ahead log of one embedded store file (`store.wal`, on by default): what makes a
//! write durable without a synced redb commit per write.
//!
//! A write transaction records the bytes of every key and value it inserts or removes
//! ([`Ops`]); before the transaction commits, that record is appended to the log next to the
//! store file (`switchyard.redb` → `switchyard.wal`) and
//! synced (`fdatasync` of an append: a fraction of a millisecond on this machine's disk), and
//! only then is the transaction committed to redb with `Durability::None` (no sync: redb keeps
//! the pages in its write buffer). A checkpoint, a synced redb commit, makes everything before
//! it durable in the file itself and empties the log: the group-commit writer runs it after it
//! has answered a round (so that round's writes do not wait for it), once [`CHECKPOINT_EVERY`]
//! has passed or the log holds [`CHECKPOINT_BYTES`] (an idle file keeps its log until its next
//! write or a clean close; a file written only directly, not through a writer thread, checkpoints
//! inside its write once twice overdue); a transaction larger than [`SYNC_ABOVE_BYTES`]
//! (a large group commit under load) is synced by redb itself instead, and is a checkpoint too.
//! Measured in docs/architecture.md ("The store's write-ahead log").
//!
//! A file whose writes are *logged, then applied* (the meter shards, `embedded.rs`) logs write
//! batches instead ([`BATCHES`] records, JSON), before redb has them: its applier puts them in
//! the file later, and a replay writes them again from the state the file holds. Its
//! checkpoints drop only the records the file holds: while the logger has appended more, the
//! log so far is set aside whole (`<log>.old`) until a later checkpoint includes it
//! ([`Wal::release_through`]).
//!
//! Invariants (what `embedded.rs` and this module keep together):
//! - a write is acknowledged only after its record is on disk (appended and synced);
//! - records are in commit order: a record is appended while its write transaction, which redb
//!   runs one at a time, is still open;
//! - the file's `wal_lsn` (in its `meta` table, written by every logged transaction) is the
//!   number of the last record its state includes: at open, the records above it are applied
//!   again in order, committed with a sync, and the log emptied. Replaying a record of changes
//!   is writing the same keys and values again, so applying one the file already had changes
//!   nothing; a record of batches is not idempotent, and is replayed only because the file's
//!   `wal_lsn` is written in the same transaction as the batches it counts;
//! - a torn record (a crash in the middle of an append) fails its checksum and ends the replay:
//!   its write was never acknowledged;
//! - a record whose redb commit failed is cut off the log before the error is returned, so
//!   that the caller's retry cannot apply the write twice; when even the cut fails, the
//!   process stops (the restart replays the record: a write that was durable but not
//!   acknowledged, as after a crash between a commit and its answer).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A checkpoint at least this often while the log has records: bounds the replay after a crash
/// and the pages redb holds unsynced (and cannot free: redb frees pages only at a synced commit).
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_secs(2);
/// ... or as soon as the log holds this many bytes.
pub(crate) const CHECKPOINT_BYTES: u64 = 64 << 20;

/// A transaction that changes at least this many bytes is committed by redb with a sync of its
/// own instead of being logged (a large group commit under load: redb writes its pages once,
/// where logging them first writes them twice); that commit is a checkpoint too. Measured by
/// `cargo bench --bench core -- order_path` (docs/architecture.md).
pub(crate) const SYNC_ABOVE_BYTES: u64 = 1 << 20;

/// Record header: payload length (u32), CRC-32 of the number and payload (u32), number (u64).
const HEADER: usize = 16;

/// The first byte of a record that holds write batches (the logger of a file whose
/// acknowledgements do not wait for redb, `embedded.rs`, "Logged, then applied"): the batches
/// follow as JSON. A record of physical changes ([`Ops`]) starts with `INSERT` or `REMOVE`.
pub(crate) const BATCHES: u8 = 0xB7;

const INSERT: u8 = 1;
const REMOVE: u8 = 2;

/// A checkpoint of a store file: a synced redb commit that emptied `bytes` of its log. (Named
/// and described in `crate::observability::CATALOGUE`; recorded here because the store sits on
/// `domain` alone.)
pub(crate) fn record_checkpoint(elapsed: Duration, bytes: u64) {
    metrics::histogram!("switchyard_store_checkpoint_seconds").record(elapsed.as_secs_f64());
    metrics::counter!("switchyard_store_wal_bytes_total").increment(bytes);
}

/// The changes one write transaction made, in order: `kind table key [value]`, lengths as u32.
#[derive(Debug, Default)]
pub(crate) struct Ops {
    bytes: Vec<u8>,
}

/// One change read back from a record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    Insert {
        table: u8,
        key: &'a [u8],
        value: &'a [u8],
    },
    Remove {
        table: u8,
        key: &'a [u8],
    },
}

impl Ops {
    pub(crate) fn insert(&mut self, table: u8, key: &[u8], value: &[u8]) {
        self.bytes.reserve(10 + key.len() + value.len());
        self.bytes.push(INSERT);
        self.bytes.push(table);
        self.put(key);
        self.put(value);
    }

    pub(crate) fn remove(&mut self, table: u8, key: &[u8]) {
        self.bytes.push(REMOVE);
        self.bytes.push(table);
        self.put(key);
    }

    fn put(&mut self, b: &[u8]) {
        self.bytes
            .extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(b);
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The changes of a record's payload, in order; `Err` names what is malformed (a record that
/// passed its checksum but does not parse was written by another format: refuse it).
pub(crate) fn ops(payload: &[u8]) -> impl Iterator<Item = Result<Op<'_>, String>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at >= payload.len() {
            return None;
        }
        let take = |at: &mut usize| -> Option<&[u8]> {
            let n = u32::from_le_bytes(payload.get(*at..*at + 4)?.try_into().ok()?) as usize;
            let b = payload.get(*at + 4..*at + 4 + n)?;
            *at += 4 + n;
            Some(b)
        };
        let start = at;
        let (kind, table) = (payload[at], payload.get(at + 1).copied().unwrap_or(0));
        at += 2;
        let op = match kind {
            INSERT => take(&mut at)
                .and_then(|key| take(&mut at).map(|value| Op::Insert { table, key, value })),
            REMOVE => take(&mut at).map(|key| Op::Remove { table, key }),
            _ => None,
        };
        match op {
            Some(op) => Some(Ok(op)),
            None => {
                at = payload.len();
                Some(Err(format!("malformed change at byte {start} of a record")))
            }
        }
    })
}

/// A record read back at open: its number and payload.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) lsn: u64,
    pub(crate) payload: Vec<u8>,
}

/// The log file of one store file.
#[derive(Debug)]
pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    /// Bytes of whole, synced records (the next record is written here).
    len: u64,
    /// The number the next record gets.
    next_lsn: u64,
    checkpointed_at: Instant,
    /// The log's older part, set aside whole by [`release_through`](Self::release_through)
    /// while the store file did not include all of it yet (`<log>.old`): its path, the number
    /// of its last record and its length. Removed once a checkpoint includes its last record.
    sealed: Option<(PathBuf, u64, u64)>,
}

impl Wal {
    /// The log next to the store file `store` (`switchyard.redb` → `switchyard.wal`).
    pub(crate) fn path_for(store: &Path) -> PathBuf {
        store.with_extension("wal")
    }

    /// The older part of the log at `path` (see [`release_through`](Self::release_through)).
    pub(crate) fn sealed_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".old");
        PathBuf::from(p)
    }

    /// Opens (or creates) the log and reads its whole records, stopping at the first torn one
    /// (the records of a sealed older part first).
    pub(crate) fn open(path: &Path) -> std::io::Result<(Wal, Vec<Record>)> {
        let old = Self::sealed_path(path);
        let mut sealed = None;
        let mut records = Vec::new();
        if old.exists() {
            let (w, older) = Self::open_one(&old)?;
            let last = older.last().map_or(0, |r| r.lsn);
            sealed = Some((old, last, w.len));
            records = older;
        }
        let (mut wal, newer) = Self::open_one(path)?;
        records.extend(newer);
        wal.next_lsn = records.last().map_or(1, |r| r.lsn + 1);
        wal.sealed = sealed;
        Ok((wal, records))
    }

    fn open_one(path: &Path) -> std::io::Result<(Wal, Vec<Record>)> {
        let existed = path.exists();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if !existed {
            // The new file's name must survive a power loss too, not only its records.
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let mut all = Vec::new();
        file.read_to_end(&mut all)?;
        let mut records = Vec::new();
        let mut at = 0usize;
        while let Some(h) = all.get(at..at + HEADER) {
            let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
            let Some(body) = all.get(at + 8..at + HEADER + len) else {
                break; // torn: the append did not finish
            };
            if crc32fast::hash(body) != crc {
                break;
            }
            records.push(Record {
                lsn: u64::from_le_bytes(body[0..8].try_into().expect("8 bytes")),
                payload: body[8..].to_vec(),
            });
            at += HEADER + len;
        }
        if at < all.len() {
            // A torn last append (never acknowledged), or damage: say how much is dropped.
            tracing::warn!(log = %path.display(), records = records.len(), dropped_bytes = all.len() - at, "the write-ahead log ends in an incomplete or damaged record; it and anything after it are not replayed");
        }
        let next_lsn = records.last().map_or(1, |r| r.lsn + 1);
        Ok((
            Wal {
                file,
                path: path.to_path_buf(),
                len: at as u64,
                next_lsn,
                checkpointed_at: Instant::now(),
                sealed: None,
            },
            records,
        ))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The number the next record gets; at open, the caller raises it above what the store
    /// file already includes.
    pub(crate) fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    pub(crate) fn start_at(&mut self, lsn: u64) {
        self.next_lsn = self.next_lsn.max(lsn);
    }

    /// Appends record `lsn` and syncs it. On an error the log is cut back to its last whole
    /// record (a partial append must not sit in front of the next one).
    pub(crate) fn append(&mut self, lsn: u64, payload: &[u8]) -> std::io::Result<u64> {
        let mut buf = Vec::with_capacity(HEADER + payload.len());
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.extend_from_slice(&lsn.to_le_bytes());
        buf.extend_from_slice(payload);
        let crc = crc32fast::hash(&buf[8..]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let before = self.len;
        let written = self
            .file
            .write_all_at(&buf, before)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            if let Err(cut) = self.file.set_len(before) {
                // A whole record that may be on disk, for a write that will be retried: the
                // replay after a restart would apply it twice. Stop instead (nothing was
                // acknowledged, and the restart applies the record once).
                tracing::error!(log = %self.path.display(), error = %e, cut_error = %cut, "a write-ahead log append failed and cannot be cut off; stopping");
                std::process::abort();
            }
            return Err(e);
        }
        self.len = before + buf.len() as u64;
        self.next_lsn = lsn + 1;
        Ok(before)
    }

    /// Cuts the log back to `len` bytes (the record appended at `len` did not commit) and
    /// syncs the cut.
    pub(crate) fn cut(&mut self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)?;
        // The file is `len` long now, whether or not the sync below works: the next record
        // goes there (never past a gap of zeros that would end the replay).
        self.len = len;
        self.file.sync_data()
    }

    /// Empties the log after a synced commit of the store file included every record.
    pub(crate) fn empty(&mut self) -> std::io::Result<()> {
        if let Some((old, _, _)) = self.sealed.take() {
            std::fs::remove_file(&old)?;
        }
        self.cut(0)?;
        self.checkpointed_at = Instant::now();
        Ok(())
    }

    /// After a synced commit of the store file that includes the records up to `lsn` (and
    /// maybe not those after it, which a logger appended meanwhile): drops what is included.
    /// The log is emptied when all of it is; otherwise its records so far are set aside whole
    /// (renamed `<log>.old`) and a new log starts, and the older part goes at the first
    /// checkpoint that includes its last record. One older part at most: while it is not
    /// included yet, the log is not set aside again.
    pub(crate) fn release_through(&mut self, lsn: u64) -> std::io::Result<()> {
        if let Some((old, last, _)) = &self.sealed {
            if *last <= lsn {
                std::fs::remove_file(old)?;
                self.sealed = None;
            }
        }
        self.checkpointed_at = Instant::now();
        if self.len == 0 {
            return Ok(());
        }
        if self.next_lsn <= lsn + 1 {
            return self.cut(0);
        }
        if self.sealed.is_some() {
            return Ok(());
        }
        let old = Self::sealed_path(&self.path);
        std::fs::rename(&self.path, &old)?;
        self.sealed = Some((old, self.next_lsn - 1, self.len));
        // From here on the log's records are under the older name: a log that could not start
        // again, or whose names might not survive a power loss, would put acknowledged writes
        // where a replay does not look. Stop instead; the restart reads both files.
        let fresh = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)
            .and_then(|f| {
                if let Some(dir) = self.path.parent() {
                    File::open(dir)?.sync_all()?;
                }
                Ok(f)
            });
        match fresh {
            Ok(file) => {
                self.file = file;
                self.len = 0;
                Ok(())
            }
            Err(e) => {
                tracing::error!(log = %self.path.display(), error = %e, "the write-ahead log was set aside and a new one cannot be started; stopping (the restart replays both)");
                std::process::abort();
            }
        }
    }

    /// Bytes of whole records, the older part's included.
    pub(crate) fn len(&self) -> u64 {
        self.len + self.sealed.as_ref().map_or(0, |s| s.2)
    }

    /// Whether a checkpoint is due.
    pub(crate) fn checkpoint_due(&self) -> bool {
        let len = self.len();
        len >= CHECKPOINT_BYTES || (len > 0 && self.checkpointed_at.elapsed() >= CHECKPOINT_EVERY)
    }

    /// Due twice over: what a writer that does not checkpoint after its rounds (a direct
    /// write) checks, so that a file written that way alone still checkpoints.
    pub(crate) fn checkpoint_overdue(&self) -> bool {
        let len = self.len();
        len >= 2 * CHECKPOINT_BYTES
            || (len > 0 && self.checkpointed_at.elapsed() >= 2 * CHECKPOINT_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(n: u8) -> Ops {
        let mut o = Ops::default();
        o.insert(1, &[n], b"value");
        o.remove(2, b"gone");
        o
    }

    #[test]
    fn records_come_back_in_order_and_a_torn_tail_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut w, none) = Wal::open(&path).unwrap();
        assert!(none.is_empty());
        for lsn in 1..=3 {
            w.append(lsn, ops(lsn as u8).as_bytes()).unwrap();
        }
        let whole = w.len();
        drop(w);
        // A crash in the middle of the fourth append: half a record at the end.
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all_at(&[9; 11], whole).unwrap();
        let (w, back) = Wal::open(&path).unwrap();
        assert_eq!(back.iter().map(|r| r.lsn).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(w.len(), whole, "the torn tail is not counted");
        assert_eq!(w.next_lsn(), 4);
        let changes: Vec<_> = super::ops(&back[1].payload).map(Result::unwrap).collect();
        assert_eq!(
            changes,
            [
                Op::Insert {
                    table: 1,
                    key: &[2],
                    value: b"value"
                },
                Op::Remove {
                    table: 2,
                    key: b"gone"
                }
            ]
        );
    }

    #[test]
    fn a_flipped_byte_ends_the_replay_at_that_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut w, _) = Wal::open(&path).unwrap();
        w.append(1, ops(1).as_bytes()).unwrap();
        let second = w.append(2, ops(2).as_bytes()).unwrap();
        w.append(3, ops(3).as_bytes()).unwrap();
        drop(w);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&[0xff], second + HEADER as u64 + 3).unwrap();
        let (w, back) = Wal::open(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(w.len(), second);
    }

    #[test]
    fn a_cut_record_is_gone_and_the_next_one_takes_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut w, _) = Wal::open(&path).unwrap();
        w.append(1, ops(1).as_bytes()).unwrap();
        let at = w.append(2, ops(2).as_bytes()).unwrap();
        w.cut(at).unwrap();
        w.append(2, ops(7).as_bytes()).unwrap();
        drop(w);
        let (_, back) = Wal::open(&path).unwrap();
        assert_eq!(back.len(), 2);
        let first: Vec<_> = super::ops(&back[1].payload).map(Result::unwrap).collect();
        assert!(matches!(first[0], Op::Insert { key: &[7], .. }));
    }

    #[test]
    fn records_set_aside_stay_until_a_checkpoint_includes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.wal");
        let (mut w, _) = Wal::open(&path).unwrap();
        for lsn in 1..=3 {
            w.append(lsn, ops(lsn as u8).as_bytes()).unwrap();
        }
        // A checkpoint that includes record 2 only: 1-3 are set aside, a new log starts.
        w.release_through(2).unwrap();
        assert!(Wal::sealed_path(&path).exists());
        w.append(4, ops(4).as_bytes()).unwrap();
        // Not included yet: a second checkpoint at 2 keeps the older part and the new log.
        w.release_through(2).unwrap();
        drop(w);
        let (mut w, back) = Wal::open(&path).unwrap();
        assert_eq!(back.iter().map(|r| r.lsn).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(w.next_lsn(), 5);
        // A checkpoint at 3 drops the older part; the new log (record 4) is set aside in turn.
        w.release_through(3).unwrap();
        drop(w);
        let (mut w, back) = Wal::open(&path).unwrap();
        assert_eq!(back.iter().map(|r| r.lsn).collect::<Vec<_>>(), [4]);
        // Everything included: nothing left, on disk or at the next open.
        w.release_through(4).unwrap();
        assert_eq!(w.len(), 0);
        assert!(!Wal::sealed_path(&path).exists());
        drop(w);
        let (w, back) = Wal::open(&path).unwrap();
        assert!(back.is_empty());
        assert_eq!(w.next_lsn(), 1);
    }

    #[test]
    fn a_malformed_payload_is_an_error_not_a_panic() {
        let bad = [INSERT, 1, 200, 0, 0, 0, 1];
        let got: Vec<_> = super::ops(&bad).collect();
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
        let unknown = [7u8, 1, 0, 0, 0, 0];
        assert!(super::ops(&unknown).next().unwrap().is_err());
    }
}

//! Group commit (above the store: it imports the store contract and reports to
//! `observability`; the store itself depends on `domain` only). One thread owns the write side of the store. Callers (the intake, meter
//! actors, the outbox publisher) send a [`WriteBatch`] and await its durable commit; the writer
//! drains whatever is queued (up to `group_commit_max`) into one transaction, so a thousand
//! meter actors share one fsync. Committed outbox entries are handed to the publisher.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Layout, OutboxEntry, ShardedStore, Store, StoreError, WriteBatch};

/// A writer's answer to a request, with when its round took the request and when the round
/// answered: the caller records its wait for the writer (`switchyard_store_queue_seconds`) and
/// the answer's way back (`switchyard_store_answer_seconds`), so that the writer's thread,
/// whose time is the store's throughput, records nothing per request.
struct Answer {
    taken: std::time::Instant,
    answered: std::time::Instant,
    result: Result<WriteBatch, (StoreError, WriteBatch)>,
}

struct Request {
    batch: WriteBatch,
    /// The batch goes back with the answer, so that it is freed on the caller's thread (the
    /// writer's time is the store's throughput).
    done: oneshot::Sender<Answer>,
    /// Counted as queued until the writer has answered it (dropped with the request), not
    /// until the caller has seen the answer: a caller on a busy thread must not make the
    /// store look behind (that once held every meter's retry off for minutes).
    _queued: Queued,
}

/// A write split by shard, with the parts not yet durable: what [`StoreHandle::try_write`]
/// gives back when a part failed, to be tried again without copying the batch.
pub(crate) struct Unwritten(Vec<(usize, WriteBatch)>);

/// Whether the store accepts writes, as the last transaction found it.
struct Health {
    /// The reason the last transaction (or needed read) failed, while failing; receivers are
    /// told when it starts and when it ends (not of every new reason meanwhile).
    failing: tokio::sync::watch::Sender<Option<String>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            failing: tokio::sync::watch::Sender::new(None),
        }
    }
}

static FAILURE_LOG: crate::observability::LogLimiter = crate::observability::LogLimiter::new();

impl Health {
    fn ok(&self) {
        if self.failing.borrow().is_none() {
            return;
        }
        let mut after = None;
        self.failing.send_if_modified(|f| {
            after = f.take();
            after.is_some()
        });
        if let Some(reason) = after {
            crate::observability::metrics().store_available.set(1.0);
            tracing::warn!(after = %reason, "the store accepts writes again; intake resumes");
        }
    }

    /// Records `reason`; receivers hear of it only when the store was available until now.
    fn set_failing(&self, reason: String) {
        self.failing
            .send_if_modified(|f| f.replace(reason).is_none());
    }
    fn failed(&self, e: &StoreError) {
        let m = crate::observability::metrics();
        m.store_write_failures.increment(1);
        m.store_available.set(0.0);
        self.set_failing(e.to_string());
        if let Some(suppressed) = FAILURE_LOG.allow(std::time::Duration::from_secs(10)) {
            tracing::error!(error = %e, failures_since_last_line = suppressed, "store writes are failing; intake paused (no offsets stored), meters hold their steps; retrying until it works again");
        }
    }
}

impl Health {
    /// A read the service needs before it can go on (the intake's duplicate check) failed: the
    /// store is as unavailable as when a write fails, and says so the same way. The next
    /// successful write clears it (the intake writes right after that read succeeds).
    fn read_failed(&self, what: &str, e: &StoreError) {
        let m = crate::observability::metrics();
        m.store_read_failures.increment(1);
        m.store_available.set(0.0);
        self.set_failing(format!("{what}: {e}"));
        if let Some(suppressed) = FAILURE_LOG.allow(std::time::Duration::from_secs(10)) {
            tracing::error!(error = %e, what, failures_since_last_line = suppressed, "store reads are failing; intake paused (no offsets stored); retrying until it works again");
        }
    }
}

/// Cheap to clone; the read side goes straight to the store.
#[derive(Clone)]
pub struct StoreHandle {
    /// Reads (every shard behind one [`Store`]).
    store: Arc<dyn Store>,
    /// One writer per file (meter shards, then the control file).
    tx: Vec<mpsc::UnboundedSender<Request>>,
    layout: Layout,
    published: mpsc::UnboundedSender<Vec<OutboxEntry>>,
    health: Arc<Health>,
    /// Write requests sent to the writers and not answered yet (over all shards).
    queued: Arc<std::sync::atomic::AtomicUsize>,
    /// Above this many queued requests the intake waits ([`StoreHandle::congested`]).
    queue_limit: usize,
}

/// Counts a request as queued until it is answered (or abandoned).
struct Queued(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl StoreHandle {
    /// Starts the writer thread of a store of one shard. `published` receives every committed
    /// outbox entry.
    pub fn start(
        store: Arc<dyn Store>,
        group_commit_max: usize,
        published: mpsc::UnboundedSender<Vec<OutboxEntry>>,
    ) -> StoreHandle {
        Self::start_sharded(
            ShardedStore::new(vec![store]),
            group_commit_max,
            false,
            published,
        )
    }

    /// Starts one writer thread per file of the store (see [`ShardedStore`]). `logged`
    /// (`store.applier`): the meter shards that can (the embedded store with its log) are
    /// logged, then applied, each with an applier thread of its own.
    pub(crate) fn start_sharded(
        sharded: ShardedStore,
        group_commit_max: usize,
        logged: bool,
        published: mpsc::UnboundedSender<Vec<OutboxEntry>>,
    ) -> StoreHandle {
        let sharded = Arc::new(sharded);
        let health = Arc::new(Health::default());
        let tx: Vec<mpsc::UnboundedSender<Request>> = (0..sharded.files().len())
            .map(|i| {
                let (tx, rx) = mpsc::unbounded_channel::<Request>();
                let (s, h, p) = (sharded.clone(), health.clone(), published.clone());
                let name = if i == 0 {
                    "store-writer".to_string()
                } else if i == sharded.layout().control_file() {
                    "store-writer-control".to_string()
                } else {
                    format!("store-writer-{i}")
                };
                if logged && i != s.layout().control_file() && s.begin_logging_shard(i) {
                    // A meter shard of the embedded store: the writer logs, an applier of
                    // its own puts the logged writes in the file (`store/embedded.rs`).
                    let (s2, h2, p2) = (s.clone(), h.clone(), p.clone());
                    std::thread::Builder::new()
                        .name(format!("store-applier-{i}"))
                        .spawn(move || applier(i, &s2, &h2, &p2))
                        .expect("spawn store applier");
                    std::thread::Builder::new()
                        .name(name)
                        .spawn(move || logger(i, &s, &h, rx, group_commit_max))
                        .expect("spawn store writer");
                } else {
                    std::thread::Builder::new()
                        .name(name)
                        .spawn(move || writer(i, &s, &h, &p, rx, group_commit_max))
                        .expect("spawn store writer");
                }
                tx
            })
            .collect();
        StoreHandle {
            queue_limit: group_commit_max * tx.len(),
            layout: sharded.layout(),
            store: sharded,
            tx,
            published,
            health,
            queued: Arc::default(),
        }
    }

    /// Applies the batch in its own transaction on the calling thread, for a caller that must
    /// not yield while it writes (the campaign actor stores a release before sending it, on its
    /// own arbiter; under tokio's paused time an await would let the clock jump). Committed
    /// outbox entries go to the publisher like the writer's.
    pub(crate) fn write_now(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let entries = self
            .store
            .apply(std::slice::from_ref(&batch))
            .inspect_err(|e| self.health.failed(e))?;
        self.health.ok();
        crate::observability::store_commit(started.elapsed(), 1, batch.audit.len());
        if !entries.is_empty() {
            let _ = self.published.send(entries);
        }
        Ok(())
    }

    /// Applies the batch durably (together with whatever else is queued): each shard's part
    /// on its writer, all at once; `Ok` once every part is durable.
    pub async fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.try_write(self.split(batch)).await.map_err(|(e, _)| e)
    }

    /// The batch split by shard, for [`try_write`](Self::try_write).
    pub(crate) fn split(&self, mut batch: WriteBatch) -> Unwritten {
        if !batch.carried_in.is_empty() {
            if let Err(e) = self.store.prepare_carry(&mut batch) {
                // (Then an old file may keep a stale copy of the record; the carry goes on.)
                tracing::warn!(error = %e, "could not look up carried orders before the write");
            }
        }
        batch.stamp = crate::store::next_stamp(batch.audit.len() + batch.outbox.len());
        Unwritten(
            batch
                .split(self.layout)
                .into_iter()
                .enumerate()
                .filter(|(_, b)| !b.is_empty())
                .collect(),
        )
    }

    /// Writes the parts, all at once; on a failure, the parts that are not durable come back
    /// (the others are: a retry sends only what is missing).
    pub(crate) async fn try_write(&self, parts: Unwritten) -> Result<(), (StoreError, Unwritten)> {
        let mut waits = Vec::with_capacity(parts.0.len());
        let sent = std::time::Instant::now();
        for (i, part) in parts.0 {
            let (done, wait) = oneshot::channel();
            self.queued
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _queued = Queued(self.queued.clone());
            if let Err(mpsc::error::SendError(r)) = self.tx[i].send(Request {
                batch: part,
                done,
                _queued,
            }) {
                return Err((StoreError::Closed, Unwritten(vec![(i, r.batch)])));
            }
            waits.push((i, wait));
        }
        let mut failed = Vec::new();
        let mut error = None;
        // The last answer to come back (parts are awaited one after another, so only the last
        // one's way back is this task's own).
        let mut last_answer: Option<std::time::Instant> = None;
        for (i, wait) in waits {
            let result = match wait.await {
                Ok(a) => {
                    crate::observability::store_queued(
                        a.taken.saturating_duration_since(sent),
                        a.answered.saturating_duration_since(a.taken),
                    );
                    last_answer = last_answer.max(Some(a.answered));
                    a.result
                }
                // The writer is gone (shutting down): the part is lost with it.
                Err(_) => {
                    error.get_or_insert(StoreError::Closed);
                    continue;
                }
            };
            if let Err((e, b)) = result {
                error.get_or_insert(e);
                failed.push((i, b));
            }
        }
        if let Some(at) = last_answer {
            crate::observability::store_answered(at.elapsed());
        }
        match error {
            None => Ok(()),
            Some(e) => Err((e, Unwritten(failed))),
        }
    }

    /// Whether more write requests are queued than the writers take in one round
    /// (`group_commit_max` per shard): new work (the order intake) waits, so that the meters'
    /// steps on work already accepted are not queued behind it.
    pub(crate) fn congested(&self) -> bool {
        self.queued.load(std::sync::atomic::Ordering::Relaxed) > self.queue_limit
    }

    /// Reads through `read`, reporting a failure to the store's health (`/readyz`,
    /// `switchyard_store_available`) under `what`: for reads the service cannot go on without.
    pub(crate) fn read<T>(
        &self,
        what: &str,
        read: impl FnOnce(&dyn Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        read(self.store.as_ref()).inspect_err(|e| self.health.read_failed(what, e))
    }

    /// A call the service needs to go on (the unit leases' renewals) failed (`Err`) or worked
    /// again after failing (`Ok(true)`): the store's health says so as for a failed read, and
    /// clears it as a write would.
    pub(crate) fn report_call(&self, what: &str, outcome: Result<bool, &StoreError>) {
        match outcome {
            Err(e) => self.health.read_failed(what, e),
            Ok(true) => self.health.ok(),
            Ok(false) => {}
        }
    }

    /// Why the store refuses writes, while it does (`/readyz` reports it).
    pub(crate) fn unavailable(&self) -> Option<String> {
        self.health.failing.borrow().clone()
    }

    /// Told when the store starts refusing (`Some(reason)`) and when it accepts again (`None`).
    pub(crate) fn availability(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.health.failing.subscribe()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// Waits for a request, then takes what else is queued (up to `max` in all) into `pending`,
/// and their batches out of them; `None` once every sender is gone.
fn next_round(
    rx: &mut mpsc::UnboundedReceiver<Request>,
    pending: &mut Vec<Request>,
    max: usize,
) -> Option<Vec<WriteBatch>> {
    pending.push(rx.blocking_recv()?);
    while pending.len() < max {
        match rx.try_recv() {
            Ok(r) => pending.push(r),
            Err(_) => break,
        }
    }
    Some(
        pending
            .iter_mut()
            .map(|r| std::mem::take(&mut r.batch))
            .collect(),
    )
}

/// A round that did not become durable: each request gets its batch back with the error (its
/// caller retries), and the store's health says so.
fn fail_round(
    h: &Health,
    e: &StoreError,
    pending: &mut Vec<Request>,
    batches: Vec<WriteBatch>,
    taken: std::time::Instant,
) {
    h.failed(e);
    let answered = std::time::Instant::now();
    for (r, b) in pending.drain(..).zip(batches) {
        let _ = r.done.send(Answer {
            taken,
            answered,
            result: Err((StoreError::Backend(e.to_string()), b)),
        });
    }
}

/// One shard's writer: drains what is queued (up to `group_commit_max` requests) into one
/// transaction, answers every request, and hands committed outbox entries to the publisher.
fn writer(
    shard: usize,
    s: &ShardedStore,
    h: &Health,
    published: &mpsc::UnboundedSender<Vec<OutboxEntry>>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    group_commit_max: usize,
) {
    let mut pending: Vec<Request> = Vec::new();
    while let Some(batches) = next_round(&mut rx, &mut pending, group_commit_max) {
        let started = std::time::Instant::now();
        let result = s.apply_shard(shard, &batches);
        let audit_rows = batches.iter().map(|b| b.audit.len()).sum();
        crate::observability::store_commit(started.elapsed(), batches.len(), audit_rows);
        match result {
            Ok(entries) => {
                h.ok();
                if !entries.is_empty() {
                    let _ = published.send(entries);
                }
                let answered = std::time::Instant::now();
                for (r, b) in pending.drain(..).zip(batches) {
                    let _ = r.done.send(Answer {
                        taken: started,
                        answered,
                        result: Ok(b),
                    });
                }
                checkpoint_after_round(s, shard);
            }
            // Isolate a bad batch (one that cannot be decoded or applied) so that it does
            // not stall everyone. (A store that refuses every write fails them all the same
            // way, quickly: a broken store reopens at most once a second, and the attempts in
            // between fail at once.)
            Err(e) if batches.len() > 1 => {
                tracing::warn!(error = %e, batches = batches.len(), shard, "group commit failed; committing its batches one by one");
                for (r, b) in pending.drain(..).zip(batches) {
                    let one = s.apply_shard(shard, std::slice::from_ref(&b));
                    match &one {
                        Ok(entries) => {
                            h.ok();
                            if !entries.is_empty() {
                                let _ = published.send(entries.clone());
                            }
                        }
                        Err(e) => h.failed(e),
                    }
                    let _ = r.done.send(Answer {
                        taken: started,
                        answered: std::time::Instant::now(),
                        result: match one {
                            Ok(_) => Ok(b),
                            Err(e) => Err((e, b)),
                        },
                    });
                }
                checkpoint_after_round(s, shard);
            }
            Err(e) => fail_round(h, &e, &mut pending, batches, started),
        }
    }
}

/// The writer of a file whose writes are logged, then applied: drains what is queued (up to
/// `group_commit_max` requests), makes it durable as one record of the write-ahead log, and
/// answers every request; the applier ([`applier`]) puts it in the file. Stops the applier
/// (after it has drained) when the last sender is gone.
fn logger(
    shard: usize,
    s: &ShardedStore,
    h: &Health,
    mut rx: mpsc::UnboundedReceiver<Request>,
    group_commit_max: usize,
) {
    let mut failed = false;
    let mut pending: Vec<Request> = Vec::new();
    while let Some(batches) = next_round(&mut rx, &mut pending, group_commit_max) {
        let audit_rows = batches.iter().map(|b| b.audit.len()).sum();
        let n = batches.len();
        let started = std::time::Instant::now();
        // (The batches go to the applier, which frees them: nothing comes back to free.)
        match s.log_shard(shard, batches) {
            Ok(()) => {
                crate::observability::store_commit(started.elapsed(), n, audit_rows);
                // Cleared only after the logger's own failure: the applier's says the store
                // is unavailable until it applies again.
                if std::mem::take(&mut failed) {
                    h.ok();
                }
                let answered = std::time::Instant::now();
                for r in pending.drain(..) {
                    let _ = r.done.send(Answer {
                        taken: started,
                        answered,
                        result: Ok(WriteBatch::default()),
                    });
                }
            }
            Err((e, batches)) => {
                failed = true;
                fail_round(h, &e, &mut pending, batches, started)
            }
        }
    }
    s.end_logging_shard(shard);
}

/// How often an applier commits at most (measured in docs/architecture.md, "Logged, then
/// applied").
const APPLY_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

static APPLIER_LOG: crate::observability::LogLimiter = crate::observability::LogLimiter::new();

/// Puts a logged file's writes in the file, as many rounds to a transaction as have queued,
/// hands their outbox entries to the publisher, and checkpoints the file when due. A failed
/// transaction is tried again (after a reopen of the file) until it works: its writes are
/// acknowledged already, and the reads that need them wait.
fn applier(
    shard: usize,
    s: &ShardedStore,
    h: &Health,
    published: &mpsc::UnboundedSender<Vec<OutboxEntry>>,
) {
    let mut failing = false;
    let mut last: Option<std::time::Instant> = None;
    loop {
        // At most one transaction per `APPLY_EVERY`: most of a redb commit's cost is fixed
        // (each table touched copies its path from the root), so fewer, larger transactions
        // cost less per write. Nothing acknowledged waits for it; a read that needs a write
        // not applied yet waits that much longer. (An idle applier applies at once.)
        if let Some(rest) = last.and_then(|l| APPLY_EVERY.checked_sub(l.elapsed())) {
            std::thread::sleep(rest);
        }
        let Some(applied) = s.apply_logged_shard(shard) else {
            break;
        };
        last = Some(std::time::Instant::now());
        match applied {
            Ok(entries) => {
                if std::mem::take(&mut failing) {
                    h.ok();
                }
                if !entries.is_empty() {
                    let _ = published.send(entries);
                }
                checkpoint_after_round(s, shard);
            }
            Err(e) => {
                // The store is as unavailable as when writes fail: `/readyz` says why and the
                // intake pauses (the logger does not clear it while this goes on).
                failing = true;
                h.set_failing(format!("applying logged writes to the store file: {e}"));
                crate::observability::metrics().store_available.set(0.0);
                crate::observability::metrics()
                    .store_write_failures
                    .increment(1);
                if let Some(suppressed) = APPLIER_LOG.allow(std::time::Duration::from_secs(10)) {
                    tracing::error!(shard, error = %e, failures_since_last_line = suppressed, "the store cannot apply logged writes to its file; they are durable in its write-ahead log, reads that need them wait; retrying");
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// After a round's answers (its writes are durable in the log and need not wait for it): the
/// file's checkpoint, when due.
fn checkpoint_after_round(s: &ShardedStore, shard: usize) {
    if let Err(e) = s.checkpoint_shard(shard) {
        tracing::warn!(shard, error = %e, "store checkpoint failed; the write-ahead log keeps the writes and grows until one succeeds");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &str, name: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    #[tokio::test]
    async fn a_write_records_its_wait_for_the_writer_and_its_answers_way_back() {
        let prom = crate::observability::prometheus();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::EmbeddedStore::open(dir.path()).unwrap());
        let (published, _rx) = mpsc::unbounded_channel();
        let handle = StoreHandle::start(store, 64, published);
        let before = prom.render();
        let mut batch = WriteBatch::default();
        batch.outbox.push(crate::store::OutboxMessage {
            topic: "t".into(),
            key: "M-1".into(),
            payload: b"{}".to_vec(),
        });
        handle.write(batch).await.unwrap();
        let after = prom.render();
        for name in [
            "switchyard_store_queue_seconds",
            "switchyard_store_answer_seconds",
        ] {
            assert!(
                count(&after, name) >= count(&before, name) + 1.0,
                "{name} did not count the write"
            );
        }
    }
}

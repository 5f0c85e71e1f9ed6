//! Group commit (above the store: it imports the store contract and reports to
//! `observability`; the store itself depends on `domain` only). One thread owns the write side of the store. Callers (the intake, meter
//! actors, the outbox publisher) send a [`WriteBatch`] and await its durable commit; the writer
//! drains whatever is queued (up to `group_commit_max`) into one transaction, so a thousand
//! meter actors share one fsync. Committed outbox entries are handed to the publisher.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{OutboxEntry, Store, StoreError, WriteBatch};

struct Request {
    batch: WriteBatch,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Whether the store accepts writes, as the last transaction found it.
#[derive(Default)]
struct Health {
    /// The reason the last transaction failed, while failing.
    failing: std::sync::Mutex<Option<String>>,
}

static FAILURE_LOG: crate::observability::LogLimiter = crate::observability::LogLimiter::new();

impl Health {
    fn ok(&self) {
        let mut f = self.failing.lock().expect("lock");
        if let Some(reason) = f.take() {
            crate::observability::metrics().store_available.set(1.0);
            tracing::warn!(after = %reason, "the store accepts writes again; intake resumes");
        }
    }
    fn failed(&self, e: &StoreError) {
        let m = crate::observability::metrics();
        m.store_write_failures.increment(1);
        m.store_available.set(0.0);
        *self.failing.lock().expect("lock") = Some(e.to_string());
        if let Some(suppressed) = FAILURE_LOG.allow(std::time::Duration::from_secs(10)) {
            tracing::error!(error = %e, failures_since_last_line = suppressed, "store writes are failing; intake paused (no offsets stored), meters hold their steps; retrying until it works again");
        }
    }
}

/// Cheap to clone; the read side goes straight to the store.
#[derive(Clone)]
pub struct StoreHandle {
    store: Arc<dyn Store>,
    tx: mpsc::UnboundedSender<Request>,
    published: mpsc::UnboundedSender<Vec<OutboxEntry>>,
    health: Arc<Health>,
}

impl StoreHandle {
    /// Starts the writer thread. `published` receives every committed outbox entry.
    pub fn start(
        store: Arc<dyn Store>,
        group_commit_max: usize,
        published: mpsc::UnboundedSender<Vec<OutboxEntry>>,
    ) -> StoreHandle {
        let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
        let s = store.clone();
        let health = Arc::new(Health::default());
        let h = health.clone();
        let published_out = published.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                let mut pending: Vec<Request> = Vec::new();
                while let Some(first) = rx.blocking_recv() {
                    pending.push(first);
                    while pending.len() < group_commit_max {
                        match rx.try_recv() {
                            Ok(r) => pending.push(r),
                            Err(_) => break,
                        }
                    }
                    let batches: Vec<WriteBatch> = pending.iter_mut().map(|r| std::mem::take(&mut r.batch)).collect();
                    let started = std::time::Instant::now();
                    let result = s.apply(&batches);
                    let audit_rows = batches.iter().map(|b| b.audit.len()).sum();
                    crate::observability::store_commit(started.elapsed(), batches.len(), audit_rows);
                    match result {
                        Ok(entries) => {
                            h.ok();
                            if !entries.is_empty() {
                                let _ = published.send(entries);
                            }
                            for r in pending.drain(..) {
                                let _ = r.done.send(Ok(()));
                            }
                        }
                        // Isolate a bad batch (one that cannot be decoded or applied) so that
                        // it does not stall everyone. (A store that refuses every write fails
                        // them all the same way, quickly: a broken store reopens at most once a
                        // second, and the attempts in between fail at once.)
                        Err(e) if batches.len() > 1 => {
                            tracing::warn!(error = %e, batches = batches.len(), "group commit failed; committing its batches one by one");
                            for (r, b) in pending.drain(..).zip(batches) {
                                let one = s.apply(std::slice::from_ref(&b));
                                match &one {
                                    Ok(entries) => {
                                        h.ok();
                                        if !entries.is_empty() {
                                            let _ = published.send(entries.clone());
                                        }
                                    }
                                    Err(e) => h.failed(e),
                                }
                                let _ = r.done.send(one.map(|_| ()));
                            }
                        }
                        Err(e) => {
                            h.failed(&e);
                            for r in pending.drain(..) {
                                let _ = r.done.send(Err(StoreError::Backend(e.to_string())));
                            }
                        }
                    }
                }
            })
            .expect("spawn store writer");
        StoreHandle {
            store,
            tx,
            published: published_out,
            health,
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

    /// Applies the batch durably (together with whatever else is queued).
    pub async fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Request { batch, done })
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }

    /// Why the store refuses writes, while it does (`/readyz` reports it).
    pub(crate) fn unavailable(&self) -> Option<String> {
        self.health.failing.lock().expect("lock").clone()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

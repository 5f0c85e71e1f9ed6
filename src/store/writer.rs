//! Group commit: one thread owns the write side of the store. Callers (the intake, meter
//! actors, the outbox publisher) send a [`WriteBatch`] and await its durable commit; the writer
//! drains whatever is queued (up to `group_commit_max`) into one transaction, so a thousand
//! meter actors share one fsync. Committed outbox entries are handed to the publisher.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{OutboxEntry, Store, StoreError, WriteBatch};

struct Request {
    batch: WriteBatch,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Cheap to clone; the read side goes straight to the store.
#[derive(Clone)]
pub struct StoreHandle {
    store: Arc<dyn Store>,
    tx: mpsc::UnboundedSender<Request>,
    published: mpsc::UnboundedSender<Vec<OutboxEntry>>,
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
                            if !entries.is_empty() {
                                let _ = published.send(entries);
                            }
                            for r in pending.drain(..) {
                                let _ = r.done.send(Ok(()));
                            }
                        }
                        Err(e) if batches.len() > 1 => {
                            // Isolate the failure: one bad batch must not stall everyone.
                            tracing::warn!(error = %e, batches = batches.len(), "group commit failed; committing its batches one by one");
                            for (r, b) in pending.drain(..).zip(batches) {
                                let one = s.apply(std::slice::from_ref(&b));
                                if let Ok(entries) = &one {
                                    if !entries.is_empty() {
                                        let _ = published.send(entries.clone());
                                    }
                                }
                                let _ = r.done.send(one.map(|_| ()).map_err(|e| {
                                    tracing::error!(error = %e, "store write refused");
                                    e
                                }));
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "store commit failed");
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
        }
    }

    /// Applies the batch in its own transaction on the calling thread, for a caller that must
    /// not yield while it writes (the campaign actor stores a release before sending it, on its
    /// own arbiter; under tokio's paused time an await would let the clock jump). Committed
    /// outbox entries go to the publisher like the writer's.
    pub fn write_now(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let entries = self.store.apply(std::slice::from_ref(&batch))?;
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

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

//! The embedded store behind a hook that sees every write first: it may refuse the write (a
//! full disk) or act on the world before it goes through (move a test clock: a stalled write).
//! Shared by test binaries through `#[path]`.

use switchyard::store::{EmbeddedStore, OutboxEntry, Store, StoreError, WriteBatch};

type Hook = dyn Fn(&[WriteBatch]) -> Result<(), StoreError> + Send + Sync;

pub struct HookedStore {
    inner: EmbeddedStore,
    before_apply: Box<Hook>,
}

impl HookedStore {
    pub fn new(
        inner: EmbeddedStore,
        before_apply: impl Fn(&[WriteBatch]) -> Result<(), StoreError> + Send + Sync + 'static,
    ) -> HookedStore {
        HookedStore {
            inner,
            before_apply: Box::new(before_apply),
        }
    }
}

impl Store for HookedStore {
    fn apply(&self, batches: &[WriteBatch]) -> Result<Vec<OutboxEntry>, StoreError> {
        (self.before_apply)(batches)?;
        self.inner.apply(batches)
    }
    fn checkpoint_if_due(&self) -> Result<(), StoreError> {
        self.inner.checkpoint_if_due()
    }
    fn order(&self, id: &str) -> Result<Option<switchyard::domain::OrderRecord>, StoreError> {
        self.inner.order(id)
    }
    fn orders_exist(&self, ids: &[&str]) -> Result<Vec<bool>, StoreError> {
        self.inner.orders_exist(ids)
    }
    fn meter(&self, id: &str) -> Result<Option<switchyard::meter::MeterMachine>, StoreError> {
        self.inner.meter(id)
    }
    fn open_orders(&self, id: &str) -> Result<Vec<switchyard::domain::OrderRecord>, StoreError> {
        self.inner.open_orders(id)
    }
    fn read_watches(&self) -> Result<Vec<switchyard::domain::ReadWatch>, StoreError> {
        self.inner.read_watches()
    }
    fn meters_with_open_work(&self) -> Result<Vec<String>, StoreError> {
        self.inner.meters_with_open_work()
    }
    fn command(&self, id: &str) -> Result<Option<switchyard::store::CommandRecord>, StoreError> {
        self.inner.command(id)
    }
    fn exception(
        &self,
        id: &str,
    ) -> Result<Option<switchyard::domain::ExceptionRecord>, StoreError> {
        self.inner.exception(id)
    }
    fn audit(&self, id: &str) -> Result<Vec<switchyard::domain::AuditEvent>, StoreError> {
        self.inner.audit(id)
    }
    fn audit_between(
        &self,
        id: &str,
        from: jiff::Timestamp,
        to: jiff::Timestamp,
        limit: usize,
    ) -> Result<Vec<switchyard::domain::AuditEvent>, StoreError> {
        self.inner.audit_between(id, from, to, limit)
    }
    fn audit_page(
        &self,
        id: &str,
        before: Option<&switchyard::store::AuditCursor>,
        limit: usize,
        order_id: Option<&str>,
    ) -> Result<
        (
            Vec<switchyard::domain::AuditEvent>,
            Option<switchyard::store::AuditCursor>,
        ),
        StoreError,
    > {
        self.inner.audit_page(id, before, limit, order_id)
    }
    fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox(limit)
    }
    fn counts(&self) -> Result<switchyard::store::StoreCounts, StoreError> {
        self.inner.counts()
    }
    fn kept(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.kept(table)
    }
    fn campaigns(&self) -> Result<Vec<switchyard::campaign::CampaignRecord>, StoreError> {
        self.inner.campaigns()
    }
    fn campaign_orders(
        &self,
        id: &str,
    ) -> Result<Vec<switchyard::campaign::CampaignOrder>, StoreError> {
        self.inner.campaign_orders(id)
    }
    fn orders_received(
        &self,
        from: jiff::Timestamp,
        to: jiff::Timestamp,
        before: Option<&switchyard::store::OrderCursor>,
        limit: usize,
    ) -> Result<Vec<switchyard::domain::OrderRecord>, StoreError> {
        self.inner.orders_received(from, to, before, limit)
    }
    fn exceptions_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<switchyard::domain::ExceptionRecord>, StoreError> {
        self.inner.exceptions_after(after, limit)
    }
    fn exception_task(
        &self,
        id: &str,
        meter_id: &str,
    ) -> Result<Option<switchyard::domain::ExceptionTask>, StoreError> {
        self.inner.exception_task(id, meter_id)
    }
    fn swap_exception_task(
        &self,
        expected: u64,
        task: &switchyard::domain::ExceptionTask,
    ) -> Result<bool, StoreError> {
        self.inner.swap_exception_task(expected, task)
    }
}

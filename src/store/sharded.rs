//! A store split by meter over several stores (shards), so that writes use more than one core:
//! each shard has its own file and its own group-commit writer (`crate::commit`). A meter's
//! rows (orders, snapshot, commands, exceptions, audit chain, events) all live in the shard
//! [`shard_of`](super::shard_of) its id, so everything one meter step writes is one shard's
//! transaction and a meter's events keep their order. Campaigns (with their events) and kept
//! table records live in the control file after the shards ([`Layout`]), so a campaign's
//! synchronous release write does not queue behind the meters' group commits.
//!
//! Reads by meter go to its shard; reads by order, command or exception id ask every file
//! (the id does not name the meter; a handful of point reads). Outbox sequence numbers are
//! made global with [`global_seq`]; [`WriteBatch::split`] maps acknowledged ones back.

use std::sync::Arc;

use super::{
    global_seq, AuditCursor, CommandRecord, Layout, OutboxEntry, Store, StoreCounts, StoreError,
    WriteBatch,
};
use crate::domain::{AuditEvent, ExceptionRecord, MeterState, OrderRecord, Timestamp};

pub(crate) struct ShardedStore {
    /// The meter shards, then the control file if the layout has one.
    files: Vec<Arc<dyn Store>>,
    layout: Layout,
}

impl ShardedStore {
    /// Meter shards only: campaigns and kept records in shard 0.
    pub(crate) fn new(shards: Vec<Arc<dyn Store>>) -> ShardedStore {
        assert!(
            !shards.is_empty(),
            "a sharded store needs at least one shard"
        );
        let layout = Layout {
            meters: shards.len(),
            control: false,
        };
        ShardedStore {
            files: shards,
            layout,
        }
    }

    /// Meter shards, and a control file for campaigns and kept records.
    pub(crate) fn with_control(
        mut shards: Vec<Arc<dyn Store>>,
        control: Arc<dyn Store>,
    ) -> ShardedStore {
        assert!(
            !shards.is_empty(),
            "a sharded store needs at least one shard"
        );
        let layout = Layout {
            meters: shards.len(),
            control: true,
        };
        shards.push(control);
        ShardedStore {
            files: shards,
            layout,
        }
    }

    /// Every file: the meter shards, then the control file.
    pub(crate) fn files(&self) -> &[Arc<dyn Store>] {
        &self.files
    }

    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    fn of(&self, meter_id: &str) -> &Arc<dyn Store> {
        &self.files[self.layout.meter_file(meter_id)]
    }

    fn control(&self) -> &Arc<dyn Store> {
        &self.files[self.layout.control_file()]
    }

    /// Applies already split batches of one file, numbering its outbox entries globally.
    pub(crate) fn apply_shard(
        &self,
        shard: usize,
        batches: &[WriteBatch],
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let n = self.files.len();
        let mut entries = self.files[shard].apply(batches)?;
        for e in &mut entries {
            e.seq = global_seq(e.seq, shard, n);
            e.packet = global_seq(e.packet, shard, n);
        }
        Ok(entries)
    }

    /// Whether the file logs its writes and applies them on a thread of its own
    /// ([`Store::begin_logging`]).
    pub(crate) fn begin_logging_shard(&self, shard: usize) -> bool {
        self.files[shard].begin_logging()
    }

    /// Already split batches of one file, durable once logged ([`Store::log`]).
    pub(crate) fn log_shard(
        &self,
        shard: usize,
        batches: Vec<WriteBatch>,
    ) -> Result<(), (StoreError, Vec<WriteBatch>)> {
        self.files[shard].log(batches)
    }

    /// One file's logged writes applied ([`Store::apply_logged`]), its outbox entries
    /// numbered globally.
    pub(crate) fn apply_logged_shard(
        &self,
        shard: usize,
    ) -> Option<Result<Vec<OutboxEntry>, StoreError>> {
        let n = self.files.len();
        Some(self.files[shard].apply_logged()?.map(|mut entries| {
            for e in &mut entries {
                e.seq = global_seq(e.seq, shard, n);
                e.packet = global_seq(e.packet, shard, n);
            }
            entries
        }))
    }

    pub(crate) fn end_logging_shard(&self, shard: usize) {
        self.files[shard].end_logging();
    }

    /// One file's housekeeping after a round ([`Store::checkpoint_if_due`]).
    pub(crate) fn checkpoint_shard(&self, shard: usize) -> Result<(), StoreError> {
        self.files[shard].checkpoint_if_due()
    }

    fn first<T>(
        &self,
        f: impl Fn(&dyn Store) -> Result<Option<T>, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        for s in &self.files {
            if let Some(v) = f(s.as_ref())? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
}

impl Store for ShardedStore {
    /// Every file's, even after one failed (the first error is returned).
    fn checkpoint_if_due(&self) -> Result<(), StoreError> {
        let mut first = Ok(());
        for f in &self.files {
            if let Err(e) = f.checkpoint_if_due() {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Not one transaction across shards: each shard's part is atomic and durable. Every
    /// caller retries a failed write as a whole, and the rows are idempotent by id (a new
    /// order already stored is left as is), so a shard that committed before another failed
    /// only sees the same rows again.
    fn apply(&self, batches: &[WriteBatch]) -> Result<Vec<OutboxEntry>, StoreError> {
        let n = self.files.len();
        let mut per: Vec<Vec<WriteBatch>> = (0..n).map(|_| Vec::new()).collect();
        for b in batches {
            let mut b = b.clone();
            // An order carried by an exchange that has ended meanwhile (in whichever file
            // holds it) stays where it ended (rare: a meter exchange).
            self.prepare_carry(&mut b)?;
            for (i, part) in b.split(self.layout).into_iter().enumerate() {
                if !part.is_empty() {
                    per[i].push(part);
                }
            }
        }
        let mut out = Vec::new();
        for (i, parts) in per.iter().enumerate() {
            if !parts.is_empty() {
                out.extend(self.apply_shard(i, parts)?);
            }
        }
        Ok(out)
    }

    /// A carried order's record lives in its meter's file: one that ended meanwhile (in
    /// whichever file) is not carried; one that lives in another file is let go there.
    fn prepare_carry(&self, b: &mut WriteBatch) -> Result<(), StoreError> {
        let mut carried = Vec::with_capacity(b.carried_in.len());
        for r in std::mem::take(&mut b.carried_in) {
            let id = &r.order.order_id;
            let to = self.layout.meter_file(&r.order.meter_id);
            let mut ended = false;
            for (i, f) in self.files.iter().enumerate() {
                if let Some(o) = f.order(id)? {
                    ended |= o.status.is_terminal();
                    if i != to && !o.status.is_terminal() {
                        b.carried_elsewhere
                            .push((o.order.meter_id.clone(), id.clone()));
                    }
                }
            }
            if !ended {
                carried.push(r);
            }
        }
        b.carried_in = carried;
        Ok(())
    }

    /// Leases live in the first file.
    fn unit_lease(&self, unit: u32) -> Result<Option<super::UnitLease>, StoreError> {
        self.files[0].unit_lease(unit)
    }

    fn swap_unit_lease(
        &self,
        unit: u32,
        expected: Option<&super::UnitLease>,
        new: &super::UnitLease,
    ) -> Result<bool, StoreError> {
        self.files[0].swap_unit_lease(unit, expected, new)
    }

    fn order(&self, order_id: &str) -> Result<Option<OrderRecord>, StoreError> {
        self.first(|s| s.order(order_id))
    }

    fn orders_exist(&self, order_ids: &[&str]) -> Result<Vec<bool>, StoreError> {
        let mut found = vec![false; order_ids.len()];
        for s in &self.files {
            for (f, here) in found.iter_mut().zip(s.orders_exist(order_ids)?) {
                *f |= here;
            }
        }
        Ok(found)
    }

    fn meter(&self, meter_id: &str) -> Result<Option<MeterState>, StoreError> {
        self.of(meter_id).meter(meter_id)
    }

    fn open_orders(&self, meter_id: &str) -> Result<Vec<OrderRecord>, StoreError> {
        self.of(meter_id).open_orders(meter_id)
    }

    fn read_watches(&self) -> Result<Vec<crate::domain::ReadWatch>, StoreError> {
        let mut out = Vec::new();
        for s in &self.files[..self.layout.meters] {
            out.extend(s.read_watches()?);
        }
        Ok(out)
    }

    /// The shards are scanned in parallel (a full scan of each: the restart's critical path).
    fn meters_with_open_work(&self) -> Result<Vec<String>, StoreError> {
        let found: Vec<Result<Vec<String>, StoreError>> = std::thread::scope(|scope| {
            let scans: Vec<_> = self.files[..self.layout.meters]
                .iter()
                .map(|s| scope.spawn(move || s.meters_with_open_work()))
                .collect();
            scans
                .into_iter()
                .map(|h| h.join().expect("open-work scan"))
                .collect()
        });
        let mut out = Vec::new();
        for f in found {
            out.extend(f?);
        }
        Ok(out)
    }

    fn command(&self, command_id: &str) -> Result<Option<CommandRecord>, StoreError> {
        self.first(|s| s.command(command_id))
    }

    fn exception(&self, exception_id: &str) -> Result<Option<ExceptionRecord>, StoreError> {
        self.first(|s| s.exception(exception_id))
    }

    fn audit(&self, meter_id: &str) -> Result<Vec<AuditEvent>, StoreError> {
        self.of(meter_id).audit(meter_id)
    }

    fn audit_between(
        &self,
        meter_id: &str,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        self.of(meter_id).audit_between(meter_id, from, to, limit)
    }

    fn audit_page(
        &self,
        meter_id: &str,
        before: Option<&AuditCursor>,
        limit: usize,
        order_id: Option<&str>,
    ) -> Result<(Vec<AuditEvent>, Option<AuditCursor>), StoreError> {
        self.of(meter_id)
            .audit_page(meter_id, before, limit, order_id)
    }

    fn outbox(&self, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        let n = self.files.len();
        let mut out = Vec::new();
        for (i, s) in self.files.iter().enumerate() {
            out.extend(s.outbox(limit)?.into_iter().map(|mut e| {
                e.seq = global_seq(e.seq, i, n);
                e.packet = global_seq(e.packet, i, n);
                e
            }));
        }
        // Whole rows (`Store::outbox`): past `limit`, only the rest of the row it ends in.
        if let Some(last) = limit
            .checked_sub(1)
            .and_then(|i| out.get(i))
            .map(|e| e.packet)
        {
            let end = out[limit..]
                .iter()
                .position(|e| e.packet != last)
                .map_or(out.len(), |p| limit + p);
            out.truncate(end);
        }
        Ok(out)
    }

    fn counts(&self) -> Result<StoreCounts, StoreError> {
        let mut t = StoreCounts::default();
        for s in &self.files {
            let c = s.counts()?;
            t.orders += c.orders;
            t.open_orders += c.open_orders;
            t.meters += c.meters;
            t.commands += c.commands;
            t.audit_events += c.audit_events;
            t.exceptions += c.exceptions;
            t.outbox += c.outbox;
        }
        Ok(t)
    }

    /// Each meter file's newest `limit`, merged.
    fn orders_received(
        &self,
        from: crate::domain::Timestamp,
        to: crate::domain::Timestamp,
        before: Option<&super::OrderCursor>,
        limit: usize,
    ) -> Result<Vec<OrderRecord>, StoreError> {
        let mut all = Vec::new();
        for s in &self.files[..self.layout.meters] {
            all.extend(s.orders_received(from, to, before, limit)?);
        }
        all.sort_by(|a, b| super::OrderCursor::after(b).cmp(&super::OrderCursor::after(a)));
        all.truncate(limit);
        Ok(all)
    }

    /// Each file's first `limit` after `after`, merged by id.
    fn exceptions_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ExceptionRecord>, StoreError> {
        let mut all = Vec::new();
        for s in &self.files {
            all.extend(s.exceptions_after(after, limit)?);
        }
        all.sort_by(|a, b| a.exception_id.cmp(&b.exception_id));
        all.dedup_by(|a, b| a.exception_id == b.exception_id);
        all.truncate(limit);
        Ok(all)
    }

    fn exception_task(
        &self,
        exception_id: &str,
        meter_id: &str,
    ) -> Result<Option<crate::domain::ExceptionTask>, StoreError> {
        self.of(meter_id).exception_task(exception_id, meter_id)
    }

    fn swap_exception_task(
        &self,
        expected: u64,
        task: &crate::domain::ExceptionTask,
    ) -> Result<bool, StoreError> {
        self.of(&task.meter_id).swap_exception_task(expected, task)
    }

    fn kept(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.control().kept(table)
    }

    fn campaigns(&self) -> Result<Vec<crate::domain::CampaignRecord>, StoreError> {
        self.control().campaigns()
    }

    fn campaign_orders(
        &self,
        campaign_id: &str,
    ) -> Result<Vec<crate::domain::CampaignOrder>, StoreError> {
        self.control().campaign_orders(campaign_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AuditKind, OrderStatus};
    use crate::store::embedded::{Shard, DEFAULT_CACHE_BYTES};
    use crate::store::{shard_of, EmbeddedStore, Layout, OutboxMessage};

    fn open(dir: &std::path::Path, of: u64) -> ShardedStore {
        ShardedStore::new(
            (0..of)
                .map(|index| {
                    let s = EmbeddedStore::try_open(
                        dir,
                        Shard { index, of },
                        DEFAULT_CACHE_BYTES,
                        true,
                    )
                    .unwrap()
                    .unwrap();
                    Arc::new(s) as Arc<dyn Store>
                })
                .collect(),
        )
    }

    fn step(meter: &str, n: u32) -> WriteBatch {
        let at = Timestamp::from_second(1_800_000_000 + i64::from(n)).unwrap();
        WriteBatch {
            audit: vec![
                AuditEvent::new(meter, at, AuditKind::StatusChange).status(OrderStatus::Dispatched)
            ],
            outbox: vec![OutboxMessage {
                topic: "events".into(),
                key: meter.into(),
                payload: format!("{meter}/{n}").into_bytes(),
            }],
            ..Default::default()
        }
    }

    /// A batch answering commands of meters in different files splits each record to its
    /// meter's file.
    #[test]
    fn an_answered_command_lands_in_its_meters_shard() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 3);
        let cmds: Vec<_> = (0..12)
            .map(|i| {
                let (o, m) = (format!("SO-{i}"), format!("M-{i}"));
                crate::store::contract::command(&format!("{o}/1"), &o, &m, 0)
            })
            .collect();
        s.apply(&[WriteBatch {
            commands: cmds.clone(),
            ..Default::default()
        }])
        .unwrap();
        let answered: Vec<CommandRecord> = cmds
            .iter()
            .map(|c| CommandRecord {
                command: c.clone(),
                results: vec![crate::domain::CommandResult {
                    schema_version: 1,
                    command_id: c.command_id.clone(),
                    meter_id: c.meter_id.clone(),
                    outcome: crate::domain::CommandOutcome::Failed {
                        code: crate::domain::FailureCode::NetworkTimeout,
                        detail: None,
                    },
                    at: c.issued_at,
                }],
            })
            .collect();
        s.apply(&[WriteBatch {
            answered: answered.clone(),
            ..Default::default()
        }])
        .unwrap();
        for (a, c) in answered.iter().zip(&cmds) {
            for (i, shard) in s.files().iter().enumerate() {
                let here = shard.command(&c.command_id).unwrap();
                if i == shard_of(&c.meter_id, 3) {
                    assert_eq!(here.as_ref(), Some(a), "{}", c.command_id);
                } else {
                    assert_eq!(here, None, "{} in shard {i}", c.command_id);
                }
            }
        }
    }

    #[test]
    fn every_row_of_a_meter_lives_in_its_shard_and_outbox_numbers_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path(), 3);
        let meters: Vec<String> = (0..30).map(|i| format!("M-{i}")).collect();
        // One batch spanning every meter (as the intake writes), then one per meter.
        let mut all = WriteBatch::default();
        for m in &meters {
            let b = step(m, 0);
            all.audit.extend(b.audit);
            all.outbox.extend(b.outbox);
        }
        let mut entries = s.apply(&[all]).unwrap();
        for m in &meters {
            entries.extend(s.apply(&[step(m, 1)]).unwrap());
        }
        // Every shard got some meters, and only its own.
        for (i, shard) in s.files().iter().enumerate() {
            let mine: Vec<&String> = meters.iter().filter(|m| shard_of(m, 3) == i).collect();
            assert!(!mine.is_empty(), "shard {i} got no meter of 30");
            assert_eq!(shard.counts().unwrap().audit_events, 2 * mine.len() as u64);
            for m in &meters {
                assert_eq!(
                    shard.audit(m).unwrap().len(),
                    if mine.contains(&m) { 2 } else { 0 }
                );
            }
        }
        for m in &meters {
            assert_eq!(s.audit(m).unwrap().len(), 2, "{m}");
        }
        // Outbox numbers are unique across shards, in order per meter, and acknowledging them
        // (through the split of a write) empties every shard's outbox.
        let mut seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), 60);
        for m in &meters {
            let mine: Vec<&OutboxEntry> =
                entries.iter().filter(|e| *e.message.key == **m).collect();
            assert_eq!(mine.len(), 2);
            assert!(mine[0].seq < mine[1].seq);
            assert_eq!(mine[0].message.payload, format!("{m}/0").into_bytes());
        }
        assert_eq!(s.outbox(usize::MAX).unwrap().len(), 60);
        let acked = WriteBatch {
            outbox_acked: entries.iter().map(|e| e.packet).collect(),
            ..Default::default()
        };
        s.apply(&[acked]).unwrap();
        assert_eq!(s.counts().unwrap().outbox, 0);
    }

    #[test]
    fn a_campaigns_step_and_kept_records_go_to_the_control_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let all =
            EmbeddedStore::open_sharded(dir.path(), 2, 3 * DEFAULT_CACHE_BYTES, true).unwrap();
        drop(all);
        // The same files, each opened on its own, to see which one holds what.
        let file = |shard| {
            Arc::new(
                EmbeddedStore::try_open(dir.path(), shard, DEFAULT_CACHE_BYTES, true)
                    .unwrap()
                    .unwrap(),
            )
        };
        let shards: Vec<Arc<EmbeddedStore>> =
            (0..2).map(|index| file(Shard { index, of: 2 })).collect();
        let control = file(Shard::control(2));
        let s = ShardedStore::with_control(
            shards.iter().map(|s| s.clone() as Arc<dyn Store>).collect(),
            control.clone(),
        );
        assert_eq!(
            s.layout(),
            Layout {
                meters: 2,
                control: true
            }
        );
        let def: crate::domain::CampaignDef = serde_json::from_str(
            r#"{"schema_version":1,"campaign_id":"C-1","rate_per_hour":60,
                "time_zone":"America/New_York","windows":{},"start_at":"2026-12-07T13:00:00Z"}"#,
        )
        .unwrap();
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let record = crate::domain::CampaignRecord {
            def: def.clone(),
            status: crate::domain::CampaignStatus::Active,
            rate_per_hour: 60,
            last_release_at: Some(at),
            released: 1,
            updated_at: at,
        };
        let mut orders: Vec<crate::domain::CampaignOrder> = (0..2)
            .map(|i| crate::domain::CampaignOrder {
                order_id: format!("SO-{i}"),
                meter_id: format!("M-{i}"),
                zone: "north".into(),
                priority: 1,
                amount_cents: 0,
                seq: i,
                released: false,
                released_at: None,
            })
            .collect();
        // The intake: the orders' rows in their meters' shards, the campaign rows in control.
        let mut intake = step(&orders[0].meter_id, 0);
        intake.campaign_orders = orders.iter().map(|o| ("C-1".into(), o.clone())).collect();
        let parts = intake.split(s.layout());
        assert_eq!(parts.len(), 3);
        assert!(parts[2].audit.is_empty() && parts[2].outbox.is_empty());
        assert_eq!(parts[2].campaign_orders.len(), 2);
        s.apply(&[step(&orders[0].meter_id, 0)]).unwrap();
        // A campaign's step (its record, a release, its event): whole to the control file,
        // the event included, so its one synchronous write touches one file.
        let campaign_step = WriteBatch {
            campaigns: vec![record.clone()],
            campaign_orders: orders.iter().map(|o| ("C-1".into(), o.clone())).collect(),
            campaign_releases: vec![("C-1".into(), orders[0].order_id.clone(), at)],
            outbox: vec![OutboxMessage {
                topic: "campaign-events".into(),
                key: "C-1".into(),
                payload: b"progress".to_vec(),
            }],
            kept: vec![crate::store::KeptRecord {
                table: "registry",
                key: "M-1".into(),
                value: Some(b"{}".to_vec()),
            }],
            ..Default::default()
        };
        let parts = campaign_step.clone().split(s.layout());
        assert!(parts[0].is_empty() && parts[1].is_empty());
        let entries = s.apply(&[campaign_step]).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].seq % 3, 2, "numbered in the control file");
        assert_eq!(entries[0].packet % 3, 2, "stored in the control file");
        for shard in &shards {
            assert!(shard.campaigns().unwrap().is_empty());
            assert!(shard.campaign_orders("C-1").unwrap().is_empty());
            assert!(shard.kept("registry").unwrap().is_empty());
        }
        let shard_events: u64 = shards.iter().map(|s| s.counts().unwrap().outbox).sum();
        assert_eq!(shard_events, 1, "only the meter's event is in the shards");
        assert_eq!(control.counts().unwrap().outbox, 1);
        assert_eq!(s.campaigns().unwrap(), [record]);
        assert_eq!(s.kept("registry").unwrap().len(), 1);
        // The release is read back with its time (the campaign's hour log after a restart).
        orders[0].released = true;
        orders[0].released_at = Some(at);
        assert_eq!(s.campaign_orders("C-1").unwrap(), orders);
        // Acknowledging the event empties the control file's outbox.
        s.apply(&[WriteBatch {
            outbox_acked: vec![entries[0].packet],
            ..Default::default()
        }])
        .unwrap();
        assert_eq!(
            s.counts().unwrap().outbox,
            1,
            "the meter's event is still there"
        );
        assert_eq!(control.counts().unwrap().outbox, 0);
    }

    #[test]
    fn a_data_directory_opens_only_with_the_shard_count_it_was_written_with() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path(), 2));
        let err = EmbeddedStore::try_open(
            dir.path(),
            Shard { index: 0, of: 3 },
            DEFAULT_CACHE_BYTES,
            true,
        )
        .err()
        .expect("opened with another shard count")
        .to_string();
        assert!(
            err.contains("store.shards = 2") && err.contains("store.shards is 3"),
            "{err}"
        );
        // Tools open it as written.
        let all = EmbeddedStore::open_all(dir.path()).unwrap();
        all.apply(&[step("M-1", 0)]).unwrap();
        assert_eq!(all.audit("M-1").unwrap().len(), 1);
    }
}

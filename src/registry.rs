//! The meter registry: a compact in-memory entry for every registered meter (zone, head-end,
//! capability and protection flags, multiplier), fed from the compacted registry topic and/or a
//! CSV / NDJSON file at start. Zones and head-end ids are interned, so an entry costs a few
//! dozen bytes beyond its id: idle meters need no actor.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use dashmap::DashMap;

use crate::domain::{MeterFlags, MeterRecord, Multipliers};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read registry file {path}: {message}")]
    Read { path: String, message: String },
    #[error("registry file {path} line {line}: {message}")]
    Record {
        path: String,
        line: usize,
        message: String,
    },
    #[error("more than 65535 distinct {what}; the registry interns them in 16 bits")]
    TooManyNames { what: &'static str },
}

#[derive(Default)]
struct Interner {
    ids: RwLock<HashMap<Arc<str>, u16>>,
    names: RwLock<Vec<Arc<str>>>,
}

impl Interner {
    fn intern(&self, s: &str, what: &'static str) -> Result<u16, RegistryError> {
        if let Some(id) = self.ids.read().expect("lock").get(s) {
            return Ok(*id);
        }
        let mut ids = self.ids.write().expect("lock");
        if let Some(id) = ids.get(s) {
            return Ok(*id);
        }
        let mut names = self.names.write().expect("lock");
        let id = u16::try_from(names.len()).map_err(|_| RegistryError::TooManyNames { what })?;
        let name: Arc<str> = Arc::from(s);
        names.push(name.clone());
        ids.insert(name, id);
        Ok(id)
    }
    /// As [`intern`](Self::intern), refusing the id `limit` and above (kept for "none").
    fn intern_below(&self, s: &str, limit: u16, what: &'static str) -> Result<u16, RegistryError> {
        let id = self.intern(s, what)?;
        if id >= limit {
            return Err(RegistryError::TooManyNames { what });
        }
        Ok(id)
    }
    fn name(&self, id: u16) -> Arc<str> {
        self.names.read().expect("lock")[id as usize].clone()
    }
}

/// One meter's registry record as the registry holds it: names and multiplier sets interned
/// (12 bytes). A meter actor keeps the last one it saw (its facts if the meter leaves the
/// registry).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CompactMeter {
    zone: u16,
    head_end: u16,
    pub(crate) flags: MeterFlags,
    multipliers: u16,
    /// Interned collector and feeder ids ([`NO_SEGMENT`]: none).
    collector: u16,
    feeder: u16,
}

/// A meter with no collector (or feeder) in the registry.
const NO_SEGMENT: u16 = u16::MAX;

/// The distinct multiplier sets (most meters have 1, 1, 1; instrument-transformer meters a
/// few ratios), interned in 16 bits like the names.
#[derive(Default)]
struct MultiplierSets {
    ids: RwLock<HashMap<[u64; 3], u16>>,
    sets: RwLock<Vec<Multipliers>>,
}

impl MultiplierSets {
    fn intern(&self, m: Multipliers) -> Result<u16, RegistryError> {
        let key = [m.active.to_bits(), m.reactive.to_bits(), m.demand.to_bits()];
        if let Some(id) = self.ids.read().expect("lock").get(&key) {
            return Ok(*id);
        }
        let mut ids = self.ids.write().expect("lock");
        if let Some(id) = ids.get(&key) {
            return Ok(*id);
        }
        let mut sets = self.sets.write().expect("lock");
        let id = u16::try_from(sets.len()).map_err(|_| RegistryError::TooManyNames {
            what: "multiplier sets",
        })?;
        sets.push(m);
        ids.insert(key, id);
        Ok(id)
    }
    fn get(&self, id: u16) -> Multipliers {
        self.sets.read().expect("lock")[id as usize]
    }
}

impl CompactMeter {
    /// Whether `other` is in the same zone.
    pub(crate) fn same_zone(&self, other: &CompactMeter) -> bool {
        self.zone == other.zone
    }
}

/// What the registry knows of one meter, expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterInfo {
    pub(crate) meter_id: String,
    pub zone: Arc<str>,
    pub(crate) head_end_id: Arc<str>,
    pub(crate) flags: MeterFlags,
    pub(crate) multipliers: Multipliers,
}

#[derive(Default)]
pub struct Registry {
    meters: DashMap<Box<str>, CompactMeter>,
    zones: Interner,
    head_ends: Interner,
    multipliers: MultiplierSets,
    collectors: Interner,
    feeders: Interner,
}

/// Result of loading a registry file: bad lines are reported, good ones loaded.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub(crate) loaded: usize,
    pub(crate) rejected: Vec<RegistryError>,
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    pub fn upsert(&self, rec: &MeterRecord) -> Result<(), RegistryError> {
        let entry = CompactMeter {
            zone: self.zones.intern(&rec.zone, "zones")?,
            head_end: self.head_ends.intern(&rec.head_end_id, "head-end ids")?,
            flags: rec.flags(),
            multipliers: self.multipliers.intern(rec.multipliers())?,
            collector: match &rec.collector_id {
                Some(c) => self
                    .collectors
                    .intern_below(c, NO_SEGMENT, "collector ids")?,
                None => NO_SEGMENT,
            },
            feeder: match &rec.feeder_id {
                Some(f) => self.feeders.intern_below(f, NO_SEGMENT, "feeder ids")?,
                None => NO_SEGMENT,
            },
        };
        self.meters.insert(rec.meter_id.as_str().into(), entry);
        Ok(())
    }

    pub(crate) fn remove(&self, meter_id: &str) {
        self.meters.remove(meter_id);
    }

    /// Whether any meter was ever registered in `zone`.
    pub fn has_zone(&self, zone: &str) -> bool {
        self.zones.ids.read().expect("lock").contains_key(zone)
    }

    pub fn contains(&self, meter_id: &str) -> bool {
        self.meters.contains_key(meter_id)
    }

    pub fn get(&self, meter_id: &str) -> Option<MeterInfo> {
        let e = *self.meters.get(meter_id)?;
        Some(MeterInfo {
            meter_id: meter_id.to_string(),
            zone: self.zones.name(e.zone),
            head_end_id: self.head_ends.name(e.head_end),
            flags: e.flags,
            multipliers: self.multipliers.get(e.multipliers),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.meters.len()
    }

    /// The meter's record as held (see [`CompactMeter`]).
    pub(crate) fn compact(&self, meter_id: &str) -> Option<CompactMeter> {
        self.meters.get(meter_id).map(|e| *e)
    }

    /// The zone of a record this registry returned.
    pub(crate) fn zone_of(&self, m: &CompactMeter) -> Arc<str> {
        self.zones.name(m.zone)
    }

    /// The multipliers of a meter, if it is registered (a read's hot path: no names expanded).
    pub(crate) fn multipliers(&self, meter_id: &str) -> Option<Multipliers> {
        let e = self.meters.get(meter_id).map(|e| e.multipliers)?;
        Some(self.multipliers.get(e))
    }

    /// The head-end of a record this registry returned.
    pub(crate) fn head_end_of(&self, m: &CompactMeter) -> Arc<str> {
        self.head_ends.name(m.head_end)
    }

    /// The meter's network segment of kind `by`, if the registry names one.
    pub(crate) fn segment_of(
        &self,
        m: &CompactMeter,
        by: crate::config::SegmentBy,
    ) -> Option<Arc<str>> {
        match by {
            crate::config::SegmentBy::Collector if m.collector != NO_SEGMENT => {
                Some(self.collectors.name(m.collector))
            }
            crate::config::SegmentBy::Feeder if m.feeder != NO_SEGMENT => {
                Some(self.feeders.name(m.feeder))
            }
            _ => None,
        }
    }

    /// Loads a `.csv` (header row with the record's field names) or `.ndjson` / `.jsonl` file.
    /// Bad lines are skipped and reported; the rest load.
    pub fn load_file(&self, path: &Path) -> Result<LoadReport, RegistryError> {
        let p = path.display().to_string();
        let mut report = LoadReport::default();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let accept =
            |line: usize, rec: Result<MeterRecord, String>, report: &mut LoadReport| match rec
                .and_then(|r| r.validate().map(|_| r))
            {
                Ok(r) => match self.upsert(&r) {
                    Ok(()) => report.loaded += 1,
                    Err(e) => report.rejected.push(e),
                },
                Err(message) => report.rejected.push(RegistryError::Record {
                    path: p.clone(),
                    line,
                    message,
                }),
            };
        if ext == "csv" {
            let mut rdr = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .from_path(path)
                .map_err(|e| RegistryError::Read {
                    path: p.clone(),
                    message: e.to_string(),
                })?;
            for (i, row) in rdr.deserialize::<MeterRecord>().enumerate() {
                accept(i + 2, row.map_err(|e| e.to_string()), &mut report);
            }
        } else {
            let text = std::fs::read_to_string(path).map_err(|e| RegistryError::Read {
                path: p.clone(),
                message: e.to_string(),
            })?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                accept(
                    i + 1,
                    serde_json::from_str::<MeterRecord>(line).map_err(|e| e.to_string()),
                    &mut report,
                );
            }
        }
        crate::observability::metrics()
            .registry_meters
            .set(self.len() as f64);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_ndjson_files_load_and_report_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("m.csv");
        std::fs::write(&csv, "meter_id,zone,head_end_id,has_switch,life_support,multiplier\nM1,north,HE1,true,false,1\nM2,north,HE1,false,true,2.5\nM3,south,HE2,maybe,false,1\n").unwrap();
        let r = Registry::new();
        let rep = r.load_file(&csv).unwrap();
        assert_eq!(rep.loaded, 2);
        assert_eq!(rep.rejected.len(), 1);
        assert!(
            rep.rejected[0].to_string().contains("line 4"),
            "{}",
            rep.rejected[0]
        );
        let m2 = r.get("M2").unwrap();
        assert!(!m2.flags.contains(MeterFlags::HAS_SWITCH));
        assert!(m2.flags.contains(MeterFlags::LIFE_SUPPORT));
        assert_eq!(&*m2.zone, "north");
        assert_eq!(m2.multipliers.active, 2.5);
        assert_eq!(
            m2.multipliers.demand, 2.5,
            "the others default to `multiplier`"
        );
        assert_eq!(r.multipliers("M1"), Some(Multipliers::default()));

        let nd = dir.path().join("m.ndjson");
        std::fs::write(&nd, "{\"meter_id\":\"M9\",\"zone\":\"east\",\"head_end_id\":\"HE3\",\"has_switch\":true}\n{\"meter_id\":\"\",\"zone\":\"e\",\"head_end_id\":\"h\",\"has_switch\":true}\nnot json\n").unwrap();
        let rep = r.load_file(&nd).unwrap();
        assert_eq!(rep.loaded, 1);
        assert_eq!(rep.rejected.len(), 2);
        assert!(r.contains("M9") && r.contains("M1"));
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn each_usage_type_has_its_multiplier_and_bad_ones_are_refused() {
        let r = Registry::new();
        let rec: MeterRecord = serde_json::from_str(
            r#"{"meter_id":"CT-1","zone":"z","head_end_id":"h","has_switch":true,"multiplier":40,"reactive_multiplier":40,"demand_multiplier":0.5}"#,
        )
        .unwrap();
        rec.validate().unwrap();
        r.upsert(&rec).unwrap();
        let m = r.multipliers("CT-1").unwrap();
        assert_eq!((m.active, m.reactive, m.demand), (40.0, 40.0, 0.5));
        let bad: MeterRecord = serde_json::from_str(
            r#"{"meter_id":"CT-2","zone":"z","head_end_id":"h","has_switch":true,"demand_multiplier":-2}"#,
        )
        .unwrap();
        let e = bad.validate().unwrap_err();
        assert!(e.contains("demand_multiplier -2"), "{e}");
        assert_eq!(std::mem::size_of::<CompactMeter>(), 12);
    }

    #[test]
    fn a_meter_names_its_collector_and_feeder_segments() {
        use crate::config::SegmentBy;
        let r = Registry::new();
        let rec: MeterRecord = serde_json::from_str(
            r#"{"meter_id":"M-1","zone":"z","head_end_id":"h","has_switch":true,"collector_id":"COLL-7","feeder_id":"FDR-12"}"#,
        )
        .unwrap();
        r.upsert(&rec).unwrap();
        let plain: MeterRecord = serde_json::from_str(
            r#"{"meter_id":"M-2","zone":"z","head_end_id":"h","has_switch":true}"#,
        )
        .unwrap();
        r.upsert(&plain).unwrap();
        let m1 = r.compact("M-1").unwrap();
        assert_eq!(
            r.segment_of(&m1, SegmentBy::Collector).as_deref(),
            Some("COLL-7")
        );
        assert_eq!(
            r.segment_of(&m1, SegmentBy::Feeder).as_deref(),
            Some("FDR-12")
        );
        let m2 = r.compact("M-2").unwrap();
        assert_eq!(r.segment_of(&m2, SegmentBy::Collector), None);
        assert_eq!(r.segment_of(&m2, SegmentBy::Feeder), None);
        // An empty or oversized segment name is refused, naming the field.
        for (field, value) in [
            ("collector_id", String::new()),
            ("feeder_id", "F".repeat(65)),
        ] {
            let mut v: serde_json::Value = serde_json::from_str(
                r#"{"meter_id":"M-3","zone":"z","head_end_id":"h","has_switch":true}"#,
            )
            .unwrap();
            v[field] = value.into();
            let bad: MeterRecord = serde_json::from_value(v).unwrap();
            let err = bad.validate().unwrap_err();
            assert!(err.contains(field), "{err}");
        }
    }

    #[test]
    fn sample_registry_in_config_loads_cleanly() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/meters.sample.csv");
        let r = Registry::new();
        let rep = r.load_file(&path).unwrap();
        assert!(rep.rejected.is_empty(), "{:?}", rep.rejected);
        assert!(rep.loaded >= 5);
    }
}

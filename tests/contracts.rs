//! The documented contracts are the real ones: the JSON Schemas in docs/schemas accept what
//! switchyard really publishes (taken off the topics), the order examples in docs/topics.md are
//! accepted by switchyard's own validation, docs/asyncapi.yaml has a channel with the right
//! direction and schema for every configured topic, and docs/metrics.md names exactly the
//! metrics switchyard registers, with their `# HELP` texts.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// JSON code blocks of a Markdown file.
fn json_blocks(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match (&mut cur, line.trim_start()) {
            (None, l) if l.starts_with("```json") => cur = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => out.push(cur.take().unwrap()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_order_example_in_the_docs_is_accepted_by_schema_and_by_switchyard() {
    let order_schema = schema("order.v1.schema.json");
    let result_schema = schema("head-end-result.v1.schema.json");
    let md = std::fs::read_to_string(root().join("docs/topics.md")).unwrap();
    let now: jiff::Timestamp = "2026-11-25T00:00:00Z".parse().unwrap();
    let (mut orders, mut results) = (0, 0);
    for block in json_blocks(&md) {
        // A block is one object, or one object per line.
        let values: Vec<Value> = match serde_json::from_str::<Value>(&block) {
            Ok(v) => vec![v],
            Err(_) => block
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    serde_json::from_str(l)
                        .unwrap_or_else(|e| panic!("docs JSON line does not parse: {e}: {l}"))
                })
                .collect(),
        };
        for v in values {
            if v.get("kind").is_some() && v.get("reason").is_some() {
                assert_valid(&order_schema, &v, "docs order example");
                let meter = v["meter_id"].as_str().unwrap().to_string();
                let bytes = serde_json::to_vec(&v).unwrap();
                switchyard::domain::validate_order(
                    Some(meter.as_bytes()),
                    Some(&bytes),
                    |_| true,
                    now,
                )
                .unwrap_or_else(|r| {
                    panic!("docs example refused: {:?} {}\n{v:#}", r.reason, r.detail)
                });
                orders += 1;
            } else if v.get("outcome").is_some() {
                assert_valid(&result_schema, &v, "docs result example");
                serde_json::from_value::<switchyard::domain::CommandResult>(v).unwrap();
                results += 1;
            }
        }
    }
    assert!(orders >= 4, "an example per order kind ({orders} found)");
    assert!(results >= 2, "result examples ({results} found)");
}

/// The meter-read examples in docs/topics.md pass the read schema and switchyard's own
/// validation (one of each kind), and both refuse a register read with an interval.
#[test]
fn every_read_example_in_the_docs_is_accepted_by_schema_and_by_switchyard() {
    let read_schema = schema("read.v1.schema.json");
    let md = std::fs::read_to_string(root().join("docs/topics.md")).unwrap();
    let now: jiff::Timestamp = "2026-12-05T00:00:00Z".parse().unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for block in json_blocks(&md) {
        let Ok(v) = serde_json::from_str::<Value>(&block) else {
            continue;
        };
        if v.get("read_id").is_none() {
            continue;
        }
        assert_valid(&read_schema, &v, "docs read example");
        let meter = v["meter_id"].as_str().unwrap().to_string();
        let bytes = serde_json::to_vec(&v).unwrap();
        let r = switchyard::domain::validate_read(Some(meter.as_bytes()), Some(&bytes), now)
            .unwrap_or_else(|e| panic!("docs read refused: {e:?}\n{v:#}"));
        kinds.insert(format!("{:?}", r.kind));
    }
    assert_eq!(
        kinds.len(),
        2,
        "a register and an interval example: {kinds:?}"
    );
    // And the schema refuses what switchyard refuses.
    let bad = serde_json::json!({"schema_version": 1, "read_id": "R", "meter_id": "M", "kind": "register", "interval_start": "2026-12-02T06:00:00Z", "read_at": "2026-12-02T06:15:00Z", "values": [{"usage": "active", "value": 1}]});
    assert!(
        !read_schema.is_valid(&bad),
        "a register read with an interval"
    );
    let bytes = serde_json::to_vec(&bad).unwrap();
    assert!(switchyard::domain::validate_read(Some(b"M"), Some(&bytes), now).is_err());
}

/// The fact examples in docs/topics.md pass their schemas and switchyard's own parsers, and
/// the schemas' own examples do too.
#[test]
fn every_fact_example_in_the_docs_is_accepted_by_schema_and_by_switchyard() {
    use switchyard::facts::{EmergencyRecord, MeterFact, WeatherRecord};
    let md = std::fs::read_to_string(root().join("docs/topics.md")).unwrap();
    let mut values: Vec<Value> = Vec::new();
    for block in json_blocks(&md) {
        for l in block.lines().filter(|l| !l.trim().is_empty()) {
            if let Ok(v) = serde_json::from_str::<Value>(l) {
                values.push(v);
            }
        }
    }
    for name in [
        "weather.v1.schema.json",
        "emergency.v1.schema.json",
        "customer-fact.v1.schema.json",
        "control.v1.schema.json",
    ] {
        let text = std::fs::read_to_string(root().join("docs/schemas").join(name)).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        values.extend(v["examples"].as_array().unwrap().iter().cloned());
    }
    let mut seen = std::collections::BTreeMap::new();
    for v in values {
        let bytes = serde_json::to_vec(&v).unwrap();
        let kind = if v.get("low_f").is_some() {
            assert_valid(&schema("weather.v1.schema.json"), &v, "weather example");
            let key = format!(
                "{}/{}",
                v["zone"].as_str().unwrap(),
                v["date"].as_str().unwrap()
            );
            WeatherRecord::parse(Some(&key), &bytes).unwrap();
            "weather"
        } else if v.get("emergency_id").is_some() {
            assert_valid(&schema("emergency.v1.schema.json"), &v, "emergency example");
            EmergencyRecord::parse(v["emergency_id"].as_str(), &bytes).unwrap();
            "emergency"
        } else if v["type"] == "approval"
            || v["type"] == "order_hold"
            || v["type"] == "meter_exchange"
        {
            assert_valid(&schema("control.v1.schema.json"), &v, "control example");
            MeterFact::parse(v["meter_id"].as_str(), &bytes, true).unwrap();
            match v["type"].as_str() {
                Some("approval") => "approval",
                Some("order_hold") => "order_hold",
                _ => "meter_exchange",
            }
        } else if v["type"] == "move_link" {
            assert_valid(&schema("control.v1.schema.json"), &v, "move_link example");
            serde_json::from_value::<switchyard::domain::MoveLink>(v.clone()).unwrap();
            "move_link"
        } else if v["type"] == "payment" || v["type"] == "medical_certificate" {
            assert_valid(
                &schema("customer-fact.v1.schema.json"),
                &v,
                "customer fact example",
            );
            MeterFact::parse(v["meter_id"].as_str(), &bytes, false).unwrap();
            if v["type"] == "payment" {
                "payment"
            } else {
                "certificate"
            }
        } else {
            continue;
        };
        *seen.entry(kind).or_insert(0) += 1;
    }
    assert_eq!(
        seen.len(),
        8,
        "an example of every fact type in docs and schemas: {seen:?}"
    );
    // And the schemas refuse what switchyard refuses.
    let bad = serde_json::json!({"schema_version":1,"zone":"z","date":"2026-12-01","low_f":20,"high_f":30,"wind":4});
    assert!(!schema("weather.v1.schema.json").is_valid(&bad));
    let bad = serde_json::json!({"type":"approval","schema_version":1,"fact_id":"A","meter_id":"M","order_id":"O","decision":"maybe","by":"x","at":"2026-12-01T00:00:00Z"});
    assert!(!schema("control.v1.schema.json").is_valid(&bad));
    assert!(MeterFact::parse(Some("M"), &serde_json::to_vec(&bad).unwrap(), true).is_err());
}

/// The campaign-control examples in docs/topics.md and in the schema pass the schema and
/// switchyard's own parser and validation.
#[test]
fn every_campaign_example_is_accepted_by_schema_and_by_switchyard() {
    let s = schema("campaign-control.v1.schema.json");
    let md = std::fs::read_to_string(root().join("docs/topics.md")).unwrap();
    let mut values: Vec<Value> = Vec::new();
    for block in json_blocks(&md) {
        for l in block.lines().filter(|l| !l.trim().is_empty()) {
            if let Ok(v) = serde_json::from_str::<Value>(l) {
                values.push(v);
            }
        }
    }
    let text = std::fs::read_to_string(root().join("docs/schemas/campaign-control.v1.schema.json"))
        .unwrap();
    let sv: Value = serde_json::from_str(&text).unwrap();
    values.extend(sv["examples"].as_array().unwrap().iter().cloned());
    let mut n = 0;
    for v in values {
        let t = v["type"].as_str().unwrap_or("");
        if !["define", "pause", "resume", "cancel", "set_rate"].contains(&t) {
            continue;
        }
        assert_valid(&s, &v, "campaign-control example");
        let r: switchyard::campaign::ControlRecord = serde_json::from_value(v.clone()).unwrap();
        if let switchyard::campaign::ControlRecord::Define { campaign, .. } = r {
            campaign.validate(|_| true).unwrap();
        }
        n += 1;
    }
    assert!(n >= 8, "examples of every command ({n})");
    let ev = schema("campaign-event.v1.schema.json");
    let text =
        std::fs::read_to_string(root().join("docs/schemas/campaign-event.v1.schema.json")).unwrap();
    let sv: Value = serde_json::from_str(&text).unwrap();
    for e in sv["examples"].as_array().unwrap() {
        assert_valid(&ev, e, "campaign event example");
        serde_json::from_value::<switchyard::domain::CampaignEvent>(e.clone()).unwrap();
    }
}

/// The records switchyard instances send one another (a campaign's release to a meter owned
/// elsewhere on the control topic; an order joining, or an order's outcome, to a campaign
/// owned elsewhere on the campaign-control topic) are the documented contract: each record
/// switchyard writes passes the topic's schema.
#[test]
fn the_records_instances_send_each_other_match_the_topic_schemas() {
    use switchyard::campaign::ControlRecord;
    use switchyard::domain::{CampaignOrder, CampaignToMeter, OrderStatus};
    let control = schema("control.v1.schema.json");
    for r in [
        CampaignToMeter::CampaignRelease {
            schema_version: 1,
            campaign_id: "C-1".into(),
            order_id: "SO-1".into(),
            meter_id: "M-1".into(),
        },
        CampaignToMeter::CampaignWithdraw {
            schema_version: 1,
            campaign_id: "C-1".into(),
            order_id: "SO-1".into(),
            meter_id: "M-1".into(),
            reason: "outside_campaign_zones".into(),
        },
        CampaignToMeter::CampaignAdopt {
            schema_version: 1,
            campaign_id: "C-1".into(),
            order_id: "SO-1".into(),
            meter_id: "M-1".into(),
        },
    ] {
        assert_valid(
            &control,
            &serde_json::to_value(&r).unwrap(),
            "campaign message to a meter",
        );
    }
    let campaign_control = schema("campaign-control.v1.schema.json");
    let order = CampaignOrder {
        order_id: "SO-1".into(),
        meter_id: "M-1".into(),
        zone: "north".into(),
        priority: 3,
        amount_cents: 12_345,
        seq: 7,
        released: false,
        released_at: None,
    };
    for r in [
        ControlRecord::OrderJoined {
            schema_version: 1,
            campaign_id: "C-1".into(),
            order,
        },
        ControlRecord::OrderOutcome {
            schema_version: 1,
            campaign_id: "C-1".into(),
            order_id: "SO-1".into(),
            status: OrderStatus::Completed,
        },
    ] {
        let v = serde_json::to_value(&r).unwrap();
        assert_valid(&campaign_control, &v, "campaign record between instances");
        assert_eq!(serde_json::from_value::<ControlRecord>(v).unwrap(), r);
    }
    // An approval is not mistaken for one, nor the other way round.
    let bad = serde_json::json!({"type":"campaign_release","schema_version":1,"campaign_id":"C","order_id":"O","meter_id":"M","decision":"approve"});
    assert!(!control.is_valid(&bad));
}

#[test]
fn the_sample_registry_matches_the_meter_record_schema() {
    let s = schema("meter-record.v1.schema.json");
    let mut rdr = csv::Reader::from_path(root().join("config/meters.sample.csv")).unwrap();
    for rec in rdr.deserialize::<switchyard::domain::MeterRecord>() {
        assert_valid(
            &s,
            &serde_json::to_value(rec.unwrap()).unwrap(),
            "sample meter",
        );
    }
}

#[actix_rt::test]
async fn what_switchyard_publishes_matches_the_published_schemas() {
    let (_dir, app, p, events) = started(|c| {
        c.head_end.simulator.failure_rate = 0.3;
        c.head_end.simulator.lsv_reject_rate = 0.2;
        c.head_end.max_attempts = 2;
    })
    .await
    .split();
    let exceptions = TopicLog::follow(&app.bootstrap, &app.config.topics.exceptions);
    register(&app, &p, &[("M-1", true), ("M-2", true), ("M-3", false)]).await;
    let kinds = [
        "disconnect",
        "reconnect",
        "read",
        "reconnect",
        "disconnect",
        "read",
    ];
    let orders = &app.config.topics.orders;
    let mut ids = std::collections::BTreeSet::new();
    for (i, k) in kinds.iter().enumerate() {
        for m in ["M-1", "M-2", "M-3"] {
            let o = Order::new(&format!("SO-{m}-{i}"), k, m);
            ids.insert(o.id().to_string());
            o.produce(&p, orders).await;
        }
    }
    Order::cancel("SO-C", "M-1", "SO-M-1-5")
        .produce(&p, orders)
        .await;
    Order::read("SO-REJ", "M-9").produce(&p, orders).await;
    ids.extend(["SO-C".to_string(), "SO-REJ".to_string()]);
    events
        .wait("every order final", Duration::from_secs(30), |l| {
            l.finals().len() >= ids.len()
        })
        .await;
    assert_eq!(
        events
            .finals()
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        ids,
        "every order, and only those, final"
    );
    exceptions
        .wait("an exception", Duration::from_secs(10), |l| l.len() >= 1)
        .await;

    let ev_schema = schema("order-event.v1.schema.json");
    let mut statuses = std::collections::BTreeSet::new();
    for v in events.json() {
        assert_valid(&ev_schema, &v, "published order event");
        statuses.insert(v["status"].as_str().unwrap().to_string());
    }
    for s in [
        "received",
        "dispatched",
        "confirmed",
        "completed",
        "rejected",
        "failed",
    ] {
        assert!(
            statuses.contains(s),
            "no {s} event was checked: {statuses:?}"
        );
    }
    let ex_schema = schema("exception.v1.schema.json");
    for v in exceptions.json() {
        assert_valid(&ex_schema, &v, "published exception");
    }
    // Commands as the Kafka bridge serialises them.
    let cmd_schema = schema("head-end-command.v1.schema.json");
    let rec = app
        .store
        .store()
        .command("SO-M-1-0/1")
        .unwrap()
        .expect("a stored command");
    assert_valid(
        &cmd_schema,
        &serde_json::to_value(&rec.command).unwrap(),
        "head-end command",
    );
    for r in rec.results {
        assert_valid(
            &schema("head-end-result.v1.schema.json"),
            &serde_json::to_value(&r).unwrap(),
            "head-end result",
        );
    }
    app.shutdown().await;
}

/// docs/metrics.md has one row per metric of `CATALOGUE`, with the same type, and its
/// `meaning` column (without backquotes) is the metric's `# HELP` text.
#[actix_rt::test]
async fn docs_metrics_lists_exactly_the_registered_metrics() {
    use switchyard::observability::CATALOGUE;
    let doc = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    let names: Vec<&str> = CATALOGUE.iter().map(|m| m.name).collect();
    let mut rows = std::collections::BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `switchyard_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 6, "a metric row has 4 cells: {line}");
        let name = cells[1].trim_matches('`');
        assert!(
            rows.insert(name, (cells[2], cells[4].replace('`', "")))
                .is_none(),
            "docs/metrics.md documents {name} twice"
        );
    }
    for m in CATALOGUE {
        let (kind, meaning) = rows
            .get(m.name)
            .unwrap_or_else(|| panic!("docs/metrics.md has no row for {}", m.name));
        assert_eq!(
            *kind,
            m.kind.as_str(),
            "type of {} in docs/metrics.md",
            m.name
        );
        assert_eq!(
            meaning, m.help,
            "docs/metrics.md's meaning of {} differs from its HELP text in CATALOGUE",
            m.name
        );
    }
    let documented: Vec<&str> = doc
        .split('`')
        .filter(|w| w.starts_with("switchyard_") && !w.contains(' ') && !w.contains('{'))
        .collect();
    for d in documented {
        assert!(
            names.contains(&d),
            "docs/metrics.md documents {d}, which switchyard does not register"
        );
    }
    // And what /metrics really exposes is in the list, with its HELP text.
    let dir = tempfile::tempdir().unwrap();
    let app = start(test_config(dir.path())).await;
    let (_, body) = http_get(app.http_addr, "/metrics").await;
    for line in body.lines().filter(|l| l.starts_with("switchyard_")) {
        let name = line.split(['{', ' ']).next().unwrap();
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            names.contains(&base) || names.contains(&name),
            "/metrics exposes undocumented {name}"
        );
        let family = if names.contains(&name) { name } else { base };
        assert!(
            body.contains(&format!("# HELP {family} ")),
            "/metrics exposes {family} without a HELP line"
        );
    }
    assert!(
        body.lines()
            .any(|l| l.starts_with("switchyard_build_info{") && l.ends_with(" 1")),
        "/metrics has no switchyard_build_info"
    );
    app.shutdown().await;
}

/// docs/asyncapi.yaml as JSON (serde_norway: a maintained fork of serde_yaml).
fn asyncapi() -> Value {
    let text = std::fs::read_to_string(root().join("docs/asyncapi.yaml")).unwrap();
    serde_norway::from_str(&text).expect("docs/asyncapi.yaml is valid YAML")
}

fn resolve<'a>(doc: &'a Value, r: &str) -> &'a Value {
    let p = r
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("not a local $ref: {r}"));
    doc.pointer(p)
        .unwrap_or_else(|| panic!("asyncapi.yaml: {r} does not resolve"))
}

/// The asyncapi channel (name, body) whose address is `topic`.
fn channel<'a>(api: &'a Value, topic: &str) -> Option<(&'a str, &'a Value)> {
    api["channels"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, c)| c["address"] == topic)
        .map(|(n, c)| (n.as_str(), c))
}

/// The JSON Schema file names (under docs/schemas) of a channel's messages.
fn channel_schema_files(api: &Value, ch: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for m in ch["messages"].as_object().unwrap().values() {
        let msg = resolve(api, m["$ref"].as_str().unwrap());
        if let Some(r) = msg["payload"]["schema"]["$ref"].as_str() {
            out.push(
                r.strip_prefix("./schemas/")
                    .unwrap_or_else(|| panic!("schema outside docs/schemas: {r}"))
                    .to_string(),
            );
        }
    }
    out
}

/// docs/asyncapi.yaml has a channel for every topic in the config (and none other), named by
/// its config key, with the direction and schema of docs/topics.md's table; every reference
/// resolves, every schema named exists, and every example passes its schema. The dead-letter
/// reasons are the code's.
#[test]
fn asyncapi_has_a_channel_for_every_configured_topic() {
    let api = asyncapi();
    let cfg =
        switchyard::config::Config::load_with_env(None, Vec::<(String, String)>::new()).unwrap();
    let topics_md = std::fs::read_to_string(root().join("docs/topics.md")).unwrap();
    let all = cfg.topics.all();
    for (key, topic) in all {
        let (name, ch) = channel(&api, topic)
            .unwrap_or_else(|| panic!("docs/asyncapi.yaml has no channel for {key} ({topic})"));
        assert!(
            ch["description"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("Config key `{key}`")),
            "channel {name} does not name its config key {key}"
        );
        // Direction and schema as in docs/topics.md §1.
        let row = topics_md
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("docs/topics.md §1 has no row for {key}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let actions: Vec<&str> = api["operations"]
            .as_object()
            .unwrap()
            .values()
            .filter(|o| o["channel"]["$ref"] == format!("#/channels/{name}"))
            .map(|o| o["action"].as_str().unwrap())
            .collect();
        let want = if cells[3].starts_with("in") {
            "receive"
        } else {
            "send"
        };
        assert_eq!(actions, [want], "operations on channel {name} ({key})");
        let files = channel_schema_files(&api, ch);
        for f in &files {
            assert!(
                cells[6].contains(&format!("(schemas/{f})")),
                "{key}: asyncapi names {f}, docs/topics.md says {}",
                cells[6]
            );
        }
        if !cells[6].contains("(none") {
            assert!(!files.is_empty(), "channel {name} names no payload schema");
        }
    }
    let names: Vec<&str> = all.iter().map(|(_, t)| *t).collect();
    for (name, ch) in api["channels"].as_object().unwrap() {
        let a = ch["address"].as_str().unwrap();
        assert!(
            names.contains(&a),
            "channel {name} ({a}) is not a configured topic"
        );
    }
    // Every reference resolves; every message example passes its schema.
    for op in api["operations"].as_object().unwrap().values() {
        resolve(&api, op["channel"]["$ref"].as_str().unwrap());
        for m in op["messages"].as_array().unwrap() {
            resolve(&api, m["$ref"].as_str().unwrap());
        }
    }
    let mut examples = 0;
    for (name, msg) in api["components"]["messages"].as_object().unwrap() {
        for t in msg["traits"].as_array().into_iter().flatten() {
            resolve(&api, t["$ref"].as_str().unwrap());
        }
        let Some(r) = msg["payload"]["schema"]["$ref"].as_str() else {
            continue;
        };
        let s = schema(r.strip_prefix("./schemas/").unwrap());
        for e in msg["examples"].as_array().into_iter().flatten() {
            assert_valid(&s, &e["payload"], &format!("asyncapi example of {name}"));
            examples += 1;
        }
    }
    assert!(examples >= 15, "asyncapi examples checked: {examples}");
    // The dead-letter reasons are exactly the code's.
    let listed: Vec<&str> = api["components"]["messages"]["deadLetter"]["headers"]["properties"]
        ["switchyard.dlq.reason"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let code: Vec<&str> = switchyard::domain::DeadLetterReason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert_eq!(listed, code, "dead-letter reasons in docs/asyncapi.yaml");
}

/// What switchyard really publishes on the campaign-events topic, and what it accepts on the
/// campaign-control topic, pass the schemas the asyncapi channels name.
#[actix_rt::test]
async fn the_campaign_channels_schemas_match_real_records() {
    use serde_json::json;
    let api = asyncapi();
    let (_dir, app, p, _) = started(|_| {}).await.split();
    let t = app.config.topics.clone();
    let control_schema = {
        let (_, ch) = channel(&api, &t.campaign_control).expect("campaign-control channel");
        let f = channel_schema_files(&api, ch);
        assert_eq!(f.len(), 1, "{f:?}");
        schema(&f[0])
    };
    let event_schema = {
        let (_, ch) = channel(&api, &t.campaign_events).expect("campaign-events channel");
        let f = channel_schema_files(&api, ch);
        assert_eq!(f.len(), 1, "{f:?}");
        schema(&f[0])
    };
    let progress = TopicLog::follow(&app.bootstrap, &t.campaign_events);
    let dlq = TopicLog::follow(&app.bootstrap, &t.dead_letter);
    register(&app, &p, &[("CC-1", true), ("CC-2", true), ("CC-3", true)]).await;
    for (i, m) in ["CC-1", "CC-2", "CC-3"].iter().enumerate() {
        Order::disconnect(&format!("SO-CC-{i}"), m)
            .campaign("C-CONTRACT")
            .produce(&p, &t.orders)
            .await;
    }
    // Every day, all day, in UTC: the first release goes at once, the next an hour later.
    let w = json!(["00:00", "23:59"]);
    let now = jiff::Timestamp::now();
    let start_at = now - jiff::SignedDuration::from_hours(1);
    let commands = [
        json!({"type":"define","schema_version":1,"campaign":{"schema_version":1,"campaign_id":"C-CONTRACT","rate_per_hour":1,"time_zone":"UTC",
            "windows":{"monday":w,"tuesday":w,"wednesday":w,"thursday":w,"friday":w,"saturday":w,"sunday":w},
            "start_at":start_at.to_string(),"ordering":"priority"}}),
        json!({"type":"pause","schema_version":1,"campaign_id":"C-CONTRACT","by":"ops.contract"}),
        json!({"type":"resume","schema_version":1,"campaign_id":"C-CONTRACT","by":"ops.contract"}),
        json!({"type":"set_rate","schema_version":1,"campaign_id":"C-CONTRACT","rate_per_hour":2,"by":"ops.contract"}),
        json!({"type":"cancel","schema_version":1,"campaign_id":"C-CONTRACT","by":"ops.contract"}),
    ];
    let expect = ["started", "paused", "resumed", "rate_changed", "cancelled"];
    for (c, e) in commands.into_iter().zip(expect) {
        assert_valid(&control_schema, &c, "campaign-control record sent");
        produce_json(&p, &t.campaign_control, "C-CONTRACT", c).await;
        progress
            .wait(&format!("a {e} event"), Duration::from_secs(30), |l| {
                l.json().iter().any(|v| v["event"] == e)
            })
            .await;
    }
    assert_eq!(dlq.len(), 0, "no campaign record refused");
    let got = progress.json();
    for v in &got {
        assert_valid(&event_schema, v, "published campaign event");
    }
    for m in progress.messages.lock().unwrap().iter() {
        use rdkafka::Message;
        assert_eq!(m.key(), Some(&b"C-CONTRACT"[..]), "keyed by campaign_id");
    }
    app.shutdown().await;
}

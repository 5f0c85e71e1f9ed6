//! `switchyard orders|approvals|campaigns ...`: the operator API from a terminal. Each command
//! is one call of the HTTP API (the same rules, roles and audit as the console's), printed as a
//! table, or as the API's JSON with `--json`. The instance is `--url` (`SWITCHYARD_URL`,
//! default the local one); the token comes from `SWITCHYARD_TOKEN` (never from an argument, so
//! it is not in the shell history or the process list).

use anyhow::{bail, Context};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub(crate) struct ApiArgs {
    /// The switchyard instance.
    #[arg(
        long,
        env = "SWITCHYARD_URL",
        default_value = "http://127.0.0.1:9464",
        global = true
    )]
    url: String,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand)]
pub(crate) enum OrdersCmd {
    /// Search orders (newest first).
    List {
        /// A part of the order, meter, account or service point id (any case).
        #[arg(long)]
        q: Option<String>,
        /// Statuses, comma-separated (e.g. deferred,awaiting_approval).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// One order and its audit trail.
    Show { order_id: String },
}

#[derive(clap::Subcommand)]
pub(crate) enum ApprovalsCmd {
    /// The orders awaiting approval.
    List,
    /// Approve an order awaiting approval (supervisor).
    Approve {
        order_id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Reject an order awaiting approval (supervisor).
    Reject {
        order_id: String,
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(clap::Subcommand)]
pub(crate) enum CampaignsCmd {
    /// Every campaign with its status and releases.
    List,
    /// Pause a campaign (operator).
    Pause { campaign_id: String },
    /// Resume a paused campaign (operator).
    Resume { campaign_id: String },
}

/// One API call: the answer's JSON, or an error with the API's message and status.
fn call(url: &str, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let token = std::env::var("SWITCHYARD_TOKEN").ok();
    let full = format!("{}{path}", url.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut answer = match method {
        "GET" => {
            let mut r = agent.get(&full);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        }
        _ => {
            let mut r = agent.post(&full);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            let bytes = serde_json::to_vec(&body.unwrap_or(Value::Null))?;
            r.header("Content-Type", "application/json")
                .send(&bytes[..])
        }
    }
    .with_context(|| {
        format!("calling {full} (is switchyard running there? --url / SWITCHYARD_URL)")
    })?;
    let status = answer.status().as_u16();
    let text = answer.body_mut().read_to_string().unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status >= 400 {
        let msg = v["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or(v.to_string());
        let hint = match status {
            401 => " (set SWITCHYARD_TOKEN to your API token)",
            403 => " (your token's role may not do this)",
            _ => "",
        };
        bail!("{method} {path}: {status}: {msg}{hint}");
    }
    Ok(v)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows of `fields` (a header line, then one line per row, columns padded).
fn table(rows: &[Value], fields: &[(&str, &str)]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            fields
                .iter()
                .map(|(_, path)| text(r.pointer(path).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = fields
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|c| c[i].len())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cols: Vec<&str>| {
        cols.iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(fields.iter().map(|(h, _)| *h).collect()));
    for c in &cells {
        println!("{}", line(c.iter().map(String::as_str).collect()));
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print(a: &ApiArgs, v: &Value, human: impl FnOnce(&Value)) {
    if a.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        human(v);
    }
}

pub(crate) fn orders(a: ApiArgs, cmd: OrdersCmd) -> anyhow::Result<()> {
    match cmd {
        OrdersCmd::List { q, status, limit } => {
            let mut path = format!("/api/v1/orders?limit={limit}");
            for (k, v) in [("q", q), ("status", status)] {
                if let Some(v) = v {
                    path.push_str(&format!("&{k}={}", enc(&v)));
                }
            }
            let v = call(&a.url, "GET", &path, None)?;
            print(&a, &v, |v| {
                let rows = v["orders"].as_array().cloned().unwrap_or_default();
                table(
                    &rows,
                    &[
                        ("ORDER", "/order_id"),
                        ("METER", "/meter_id"),
                        ("KIND", "/kind"),
                        ("REASON", "/reason"),
                        ("STATUS", "/status"),
                        ("SLA", "/sla/state"),
                        ("RECEIVED", "/received_at"),
                    ],
                );
                if !v["scan_complete"].as_bool().unwrap_or(true) {
                    println!("(more: the search read {} orders; narrow it, or use --json for next_page_token)", text(&v["scanned"]));
                }
            });
        }
        OrdersCmd::Show { order_id } => {
            let v = call(
                &a.url,
                "GET",
                &format!("/api/v1/orders/{}", enc(&order_id)),
                None,
            )?;
            print(&a, &v, |v| {
                let o = &v["order"];
                println!(
                    "{}  {} {} on meter {}: {}",
                    text(&o["order"]["order_id"]),
                    text(&o["order"]["kind"]),
                    text(&o["order"]["reason"]),
                    text(&o["order"]["meter_id"]),
                    text(&o["status"])
                );
                let rows = v["audit"].as_array().cloned().unwrap_or_default();
                table(
                    &rows,
                    &[
                        ("AT", "/at"),
                        ("KIND", "/kind"),
                        ("STATUS", "/status"),
                        ("REASON", "/reason"),
                        ("DETAIL", "/detail"),
                    ],
                );
            });
        }
    }
    Ok(())
}

pub(crate) fn approvals(a: ApiArgs, cmd: ApprovalsCmd) -> anyhow::Result<()> {
    let (order_id, decision, note) = match cmd {
        ApprovalsCmd::List => {
            let v = call(&a.url, "GET", "/api/v1/approvals", None)?;
            print(&a, &v, |v| {
                let rows = v["approvals"].as_array().cloned().unwrap_or_default();
                table(
                    &rows,
                    &[
                        ("ORDER", "/order_id"),
                        ("METER", "/meter_id"),
                        ("PROTECTIONS", "/protections"),
                        ("RULES", "/held/rules"),
                        ("PRIORITY", "/priority"),
                    ],
                );
            });
            return Ok(());
        }
        ApprovalsCmd::Approve { order_id, note } => (order_id, "approve", note),
        ApprovalsCmd::Reject { order_id, note } => (order_id, "reject", note),
    };
    let v = call(
        &a.url,
        "POST",
        &format!("/api/v1/approvals/{}", enc(&order_id)),
        Some(json!({ "decision": decision, "note": note })),
    )?;
    print(&a, &v, |v| {
        println!(
            "{decision} of {order_id} accepted (by {}, fact {}): the meter applies it next",
            text(&v["by"]),
            text(&v["fact_id"])
        )
    });
    Ok(())
}

pub(crate) fn campaigns(a: ApiArgs, cmd: CampaignsCmd) -> anyhow::Result<()> {
    let (id, action) = match cmd {
        CampaignsCmd::List => {
            let v = call(&a.url, "GET", "/api/v1/campaigns", None)?;
            print(&a, &v, |v| {
                let rows = v["campaigns"].as_array().cloned().unwrap_or_default();
                table(
                    &rows,
                    &[
                        ("CAMPAIGN", "/campaign_id"),
                        ("NAME", "/name"),
                        ("STATUS", "/status"),
                        ("RATE/H", "/rate_per_hour"),
                        ("RELEASED", "/released"),
                        ("LAST RELEASE", "/last_release_at"),
                    ],
                );
            });
            return Ok(());
        }
        CampaignsCmd::Pause { campaign_id } => (campaign_id, "pause"),
        CampaignsCmd::Resume { campaign_id } => (campaign_id, "resume"),
    };
    let v = call(
        &a.url,
        "POST",
        &format!("/api/v1/campaigns/{}/{action}", enc(&id)),
        None,
    )?;
    print(&a, &v, |v| {
        println!(
            "{action} of {id} accepted (by {}): applied once the campaign has stored it",
            text(&v["by"])
        )
    });
    Ok(())
}

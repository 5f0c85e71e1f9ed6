//! `switchyard run` with a UAT business clock (`[clock]`): marked in stdout, the log, the
//! metrics and `/readyz`; refused with an external broker unless allowed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{eventually_sync, metric};
use super::{assert_line, text};

/// A plain HTTP/1.0 GET: (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

#[test]
fn a_uat_clock_is_marked_in_stdout_log_metrics_and_readyz() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("run")
        .current_dir(dir.path())
        .env("SWITCHYARD__HTTP__LISTEN", "127.0.0.1:0")
        .env("SWITCHYARD__CLOCK__START_AT", "2026-12-25T09:00:00-05:00")
        .env("SWITCHYARD__CLOCK__SPEED", "60")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (mut banner, mut addr) = (String::new(), None);
    while addr.is_none() {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "no banner: {banner}"
        );
        if let Some(rest) = line.trim().strip_prefix("operator http:") {
            let a = rest.trim().trim_start_matches("http://");
            addr = Some(a.split('/').next().unwrap().parse::<SocketAddr>().unwrap());
        }
        banner.push_str(&line);
    }
    let addr = addr.unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    stdout.read_line(&mut line).unwrap();
    stdout.read_line(&mut line).unwrap();
    assert!(
        line.contains("UAT CLOCK") && line.contains("2026-12-25T14:00:00Z"),
        "{banner}{line}"
    );

    let ready = eventually_sync("/readyz to say ready", Duration::from_secs(60), || {
        let (status, body) = get(addr, "/readyz");
        if status == 200 {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    });
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["uat_clock"]["started_at"], "2026-12-25T14:00:00Z");
    assert_eq!(ready["uat_clock"]["speed"], 60.0);
    let now: jiff::Timestamp = ready["business_time"].as_str().unwrap().parse().unwrap();
    assert!(now >= "2026-12-25T14:00:00Z".parse().unwrap(), "{ready}");
    assert!(now < "2026-12-26T14:00:00Z".parse().unwrap(), "{ready}");
    // Sixty business seconds per wall second, measured from outside.
    let business = |addr| -> (Instant, jiff::Timestamp) {
        let (_, body) = get(addr, "/readyz");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        (
            Instant::now(),
            v["business_time"].as_str().unwrap().parse().unwrap(),
        )
    };
    let (w0, b0) = business(addr);
    std::thread::sleep(Duration::from_secs(2));
    let (w1, b1) = business(addr);
    let ratio = b1.duration_since(b0).as_secs_f64() / w1.duration_since(w0).as_secs_f64();
    assert!((50.0..=70.0).contains(&ratio), "speed {ratio}");
    let (_, metrics) = get(addr, "/metrics");
    assert_eq!(
        metric(&metrics, "switchyard_business_clock_shifted"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "switchyard_business_clock_speed"),
        Some(60.0),
        "{metrics}"
    );

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("UAT BUSINESS CLOCK"), "{log}");
}

#[test]
fn the_wall_clock_is_not_marked() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check-config")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let effective: toml::Table = toml::from_str(&out).unwrap();
    assert_eq!(effective["clock"]["speed"].as_float(), Some(1.0), "{out}");
    assert!(effective["clock"].get("start_at").is_none(), "{out}");
}

#[test]
fn a_uat_clock_is_refused_with_an_external_broker_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let run = |allow: &str| {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("check-config")
            .current_dir(dir.path())
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .env("SWITCHYARD__KAFKA__BROKERS", "kafka-prod-1:9092")
            .env("SWITCHYARD__CLOCK__START_AT", "2026-12-25T09:00:00-05:00")
            .env("SWITCHYARD__CLOCK__ALLOW_WITH_EXTERNAL_BROKER", allow)
            .output()
            .unwrap()
    };
    let refused = run("false");
    let (_, err) = text(&refused);
    assert!(!refused.status.success());
    assert_line(&err, "Error: configuration rejected");
    assert_line(&err, &external_broker_refusal("clock.start_at"));
    let allowed = run("true");
    assert!(allowed.status.success(), "{}", text(&allowed).1);
    // `run` refuses it the same way, before connecting anywhere.
    let o = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("run")
        .current_dir(dir.path())
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("SWITCHYARD__KAFKA__BROKERS", "kafka-prod-1:9092")
        .env("SWITCHYARD__CLOCK__SPEED", "100")
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert_line(&err, "Error: configuration rejected");
    assert_line(&err, &external_broker_refusal("clock.speed"));
}

/// The refusal of a UAT clock setting (`key`) next to an external broker.
fn external_broker_refusal(key: &str) -> String {
    format!(
        "config key `{key}`: shifts business time (a UAT setting) while kafka.brokers names an \
         external cluster; if that cluster is a UAT one, also set \
         clock.allow_with_external_broker = true, otherwise remove the clock settings"
    )
}

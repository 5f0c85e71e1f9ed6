//! The switchyard process under test: the binary given with `--switchyard`, spawned as
//! `switchyard run` with environment overrides, observed from outside the way an SRE would:
//! `/readyz`, `/metrics`, `/stats/latency` over HTTP and `/proc/<pid>/status` for memory.
//! `kill -9` is a real SIGKILL of that process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use switchyard::observability::LatencySummary;

use crate::report::StoreWaits;
use crate::LoadtestError;

pub(crate) struct Switchyard {
    child: Child,
    pub http: SocketAddr,
    pub spawned: Instant,
}

/// A free loopback port for the child's operator endpoint.
fn free_port() -> Result<SocketAddr, LoadtestError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

impl Switchyard {
    /// Spawns `<exe> run` with these `SWITCHYARD__...` overrides; logs go to `log`.
    pub fn spawn(
        exe: &Path,
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Switchyard, LoadtestError> {
        let http = free_port()?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut cmd = Command::new(exe);
        cmd.arg("run")
            .env_remove("RUST_LOG")
            .env("SWITCHYARD__HTTP__LISTEN", http.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        for (k, v) in env {
            cmd.env(k, v);
        }
        die_with_parent(&mut cmd);
        let child = cmd.spawn()?;
        Ok(Switchyard {
            child,
            http,
            spawned: Instant::now(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for `/readyz`; returns how long after spawning it became ready.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Duration, LoadtestError> {
        self.poll_until(timeout, "ready", "/readyz", |_| true).await
    }

    /// Waits until switchyard has handed every meter with open work its recovery message
    /// (`switchyard_recovery_meters_pending` is 0); returns the time since spawn.
    pub async fn wait_recovered(&mut self, timeout: Duration) -> Result<Duration, LoadtestError> {
        self.poll_until(timeout, "done recovering", "/metrics", |body| {
            Scrape::parse(body).sum("switchyard_recovery_meters_pending", &[]) == 0.0
        })
        .await
    }

    /// Polls `path` every 50 ms until it answers 200 with a body `done` accepts (the child
    /// still running); returns the time since spawn.
    async fn poll_until(
        &mut self,
        timeout: Duration,
        what: &str,
        path: &str,
        done: impl Fn(&str) -> bool,
    ) -> Result<Duration, LoadtestError> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(LoadtestError::Child(format!(
                    "switchyard exited before it was {what} ({status}); see its log"
                )));
            }
            if let Ok((200, body)) = get(self.http, path).await {
                if done(&body) {
                    return Ok(self.spawned.elapsed());
                }
            }
            if Instant::now() > until {
                return Err(LoadtestError::Child(format!(
                    "switchyard not {what} after {} s; see its log",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `/stats/latency` as JSON.
    async fn latency_json(&self) -> Option<serde_json::Value> {
        let (code, body) = get(self.http, "/stats/latency").await.ok()?;
        if code != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    pub async fn latency(&self) -> Option<(LatencySummary, LatencySummary)> {
        let v = self.latency_json().await?;
        Some((
            serde_json::from_value(v["dispatch"].clone()).ok()?,
            serde_json::from_value(v["completion"].clone()).ok()?,
        ))
    }

    /// The dispatch's stages (`/stats/latency` `stages`): the actor's mailbox, then the step's
    /// write. `None` from a switchyard that does not serve them.
    pub async fn stages(&self) -> Option<(LatencySummary, LatencySummary)> {
        let v = self.latency_json().await?;
        Some((
            serde_json::from_value(v["stages"]["order_queue"].clone()).ok()?,
            serde_json::from_value(v["stages"]["order_write"].clone()).ok()?,
        ))
    }

    /// What the store's writers waited on so far (`None`: no write answered, or no metrics).
    pub async fn store_waits(&self) -> Option<StoreWaits> {
        match get(self.http, "/metrics").await {
            Ok((200, body)) => Scrape::parse(&body).store_waits(),
            _ => None,
        }
    }

    /// SIGKILL: no shutdown hook runs, nothing is flushed.
    pub fn kill9(&mut self) -> Result<(), LoadtestError> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM and wait for the orderly shutdown (SIGKILL after 30 s).
    pub fn stop(&mut self) -> Result<(), LoadtestError> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9()
    }
}

/// The child gets SIGKILL when the harness dies, however it dies (Ctrl-C, a kill, a panic
/// that aborts): a forgotten switchyard holding gigabytes and its data directory would skew the
/// next run. Linux only; elsewhere the harness's `Drop` is all there is.
#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_: &mut Command) {}

impl Drop for Switchyard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Resident and peak resident memory of a process, in bytes (`VmRSS`, `VmHWM`).
pub(crate) fn memory(pid: u32) -> (u64, u64) {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return (0, 0);
    };
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A minimal HTTP/1.1 GET (the operator endpoint answers with a Content-Length).
pub(crate) async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((code, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "http timeout"))?
}

/// Prometheus text format: series (`name{labels}`) to value.
pub(crate) struct Scrape(HashMap<String, f64>);

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut m = HashMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((series, value)) = line.rsplit_once(' ') {
                if let Ok(v) = value.parse::<f64>() {
                    m.insert(series.to_string(), v);
                }
            }
        }
        Scrape(m)
    }

    /// The scrapes of several instances as one: each series summed over them.
    pub fn summed(scrapes: impl IntoIterator<Item = Scrape>) -> Scrape {
        let mut m: HashMap<String, f64> = HashMap::new();
        for s in scrapes {
            for (k, v) in s.0 {
                *m.entry(k).or_default() += v;
            }
        }
        Scrape(m)
    }

    /// The store's checkpoints and rounds from their histograms; `None` before any write was
    /// answered (or from a switchyard without these metrics).
    pub fn store_waits(&self) -> Option<StoreWaits> {
        let requests = self.sum("switchyard_store_round_seconds_count", &[]);
        if requests <= 0.0 {
            return None;
        }
        // Above the 0.1 s bucket; `None` when the histogram has no such bucket (its buckets
        // are switchyard's `FAST_BUCKETS`), rather than a share made up from a missing one.
        let over = |name: &str| {
            let bucket = format!("{name}_bucket{{le=\"0.1\"}}");
            self.0
                .get(&bucket)
                .map(|under| self.sum(&format!("{name}_count"), &[]) - under)
        };
        let checkpoints = self.sum("switchyard_store_checkpoint_seconds_count", &[]);
        let mean_ms = |name: &str, n: f64| {
            if n > 0.0 {
                self.sum(&format!("{name}_sum"), &[]) * 1e3 / n
            } else {
                0.0
            }
        };
        Some(StoreWaits {
            checkpoints: checkpoints as u64,
            checkpoint_mean_ms: mean_ms("switchyard_store_checkpoint_seconds", checkpoints),
            checkpoints_over_100ms: over("switchyard_store_checkpoint_seconds").map(|n| n as u64),
            requests: requests as u64,
            round_mean_ms: mean_ms("switchyard_store_round_seconds", requests),
            rounds_over_100ms: over("switchyard_store_round_seconds").map(|n| n / requests),
        })
    }

    /// Sum over every series of `name` whose labels contain all of `labels` (`k="v"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(s, _)| {
                let (n, rest) = s.split_once('{').unwrap_or((s.as_str(), ""));
                n == name && labels.iter().all(|l| rest.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_sums_series_by_label() {
        let s = Scrape::parse(
            "# TYPE a counter\nswitchyard_order_status_total{status=\"completed\"} 5\nswitchyard_order_status_total{status=\"failed\"} 2\nswitchyard_order_status_total{status=\"received\"} 9\nswitchyard_commands_in_flight 3\n",
        );
        assert_eq!(s.sum("switchyard_order_status_total", &[]), 16.0);
        assert_eq!(
            s.sum("switchyard_order_status_total", &["status=\"failed\""]),
            2.0
        );
        assert_eq!(s.sum("switchyard_commands_in_flight", &[]), 3.0);
        assert_eq!(s.sum("switchyard_commands", &[]), 0.0);
    }

    #[test]
    fn store_waits_come_from_the_checkpoint_and_round_histograms() {
        let text = |rounds: u64| {
            format!(
                "switchyard_store_checkpoint_seconds_bucket{{le=\"0.05\"}} 1\n\
                 switchyard_store_checkpoint_seconds_bucket{{le=\"0.1\"}} 3\n\
                 switchyard_store_checkpoint_seconds_bucket{{le=\"0.5\"}} 4\n\
                 switchyard_store_checkpoint_seconds_bucket{{le=\"+Inf\"}} 4\n\
                 switchyard_store_checkpoint_seconds_sum 0.4\n\
                 switchyard_store_checkpoint_seconds_count 4\n\
                 switchyard_store_round_seconds_bucket{{le=\"0.01\"}} 900\n\
                 switchyard_store_round_seconds_bucket{{le=\"0.1\"}} 990\n\
                 switchyard_store_round_seconds_bucket{{le=\"+Inf\"}} {rounds}\n\
                 switchyard_store_round_seconds_sum 5\n\
                 switchyard_store_round_seconds_count {rounds}\n"
            )
        };
        let w = Scrape::parse(&text(1000)).store_waits().unwrap();
        assert_eq!((w.checkpoints, w.checkpoints_over_100ms), (4, Some(1)));
        assert!((w.checkpoint_mean_ms - 100.0).abs() < 1e-9);
        assert_eq!(w.requests, 1000);
        assert!((w.round_mean_ms - 5.0).abs() < 1e-9);
        assert!((w.rounds_over_100ms.unwrap() - 0.01).abs() < 1e-12);
        // Histograms without a 0.1 s bucket: the means stand, the shares are not made up.
        let other_buckets = text(1000).replace("le=\"0.1\"", "le=\"0.2\"");
        let w = Scrape::parse(&other_buckets).store_waits().unwrap();
        assert_eq!(
            (w.checkpoints_over_100ms, w.rounds_over_100ms),
            (None, None)
        );
        assert!((w.round_mean_ms - 5.0).abs() < 1e-9);
        assert_eq!(Scrape::parse(&text(0)).store_waits(), None, "no write yet");
        assert_eq!(Scrape::parse("switchyard_up 1\n").store_waits(), None);
    }
}

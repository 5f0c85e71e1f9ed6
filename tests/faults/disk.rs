//! A full disk (issue 10, defect 4): the store refuses writes, the intake pauses without storing
//! offsets, `/readyz` says why, a metric shows it, and when space returns the store is opened
//! again and every order accepted flows on; nothing is lost. The data directory is a small
//! tmpfs mounted by the test (needs root, as CI runs; elsewhere the test says so and returns).

use std::io::Write;
use std::time::Duration;

use crate::common::*;

const T: Duration = Duration::from_secs(60);

/// A tmpfs of `mb` MiB mounted at a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mb: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(Tmpfs { dir })
    }
    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes a file until the file system is full; returns its path.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let small = vec![0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    path
}

#[actix_rt::test]
async fn a_full_disk_pauses_intake_until_space_returns_and_loses_nothing() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs as root)");
        return;
    }
    let fs = Tmpfs::mount(24).expect("mount a tmpfs for the data directory");
    let mut cfg = test_config(fs.path());
    cfg.data_dir = fs.path().join("data");
    let app = start(cfg).await;
    let p = producer(&app.bootstrap);
    let events = TopicLog::follow(&app.bootstrap, &app.config.topics.order_events);
    register(&app, &p, &[("M-1", true), ("M-2", true)]).await;
    let orders = app.config.topics.orders.clone();
    let with_notes = |id: &str, m: &str| Order::read(id, m).notes(&"n".repeat(250));
    with_notes("SO-BEFORE", "M-1").produce(&p, &orders).await;
    events.wait_final("SO-BEFORE", T).await;

    let filler = fill(fs.path());
    // Orders keep arriving; the store cannot take them.
    let n = 200;
    for i in 0..n {
        let m = if i % 2 == 0 { "M-1" } else { "M-2" };
        with_notes(&format!("SO-FULL-{i:03}"), m)
            .produce(&p, &orders)
            .await;
    }
    assert_store_refusing(&app, T).await;
    assert!(
        events.finals().len() < n + 1,
        "not everything can have completed on a full disk"
    );

    // Space returns: the store is opened again and everything flows on.
    std::fs::remove_file(&filler).unwrap();
    let ev = events.clone();
    events
        .wait("every order final after space returned", T, move |l| {
            (0..n).all(|i| l.finals().contains(&format!("SO-FULL-{i:03}")))
        })
        .await;
    let full: Vec<String> = (0..n).map(|i| format!("SO-FULL-{i:03}")).collect();
    assert_completed_once(&app, &ev, &full);
    assert_store_back(&app).await;
    app.shutdown().await;
}

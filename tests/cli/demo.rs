//! `switchyard demo` as a user runs it with its output going to a pipe or a file: plain text
//! (no terminal escape codes), progress lines that say what the open orders wait on, and a
//! summary that does not count orders held for approval as final.

use std::process::Command;

/// The number after `label` on the summary line that starts with it.
fn number_after(text: &str, label: &str) -> usize {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in\n{text}"));
    line.trim_start()[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after `{label}` in {line}"))
}

#[test]
fn a_piped_demo_writes_plain_text_and_does_not_count_held_orders_as_final() {
    // Small, and with a short command deadline so the orders the simulator never answers
    // settle quickly; stdout and stderr are pipes here (`output()`).
    let run = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "demo",
            "--meters",
            "300",
            "--orders",
            "400",
            "--invalid",
            "6",
        ])
        .env("SWITCHYARD__HEAD_END__COMMAND_DEADLINE_SECS", "3")
        .env("SWITCHYARD__HEAD_END__BACKOFF_INITIAL_MS", "200")
        .env("SWITCHYARD__HEAD_END__BACKOFF_MAX_MS", "500")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "demo failed\n{stdout}\n{stderr}");
    for (name, bytes) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        assert!(
            !bytes.windows(2).any(|w| w == b"\x1b["),
            "escape codes written to a pipe ({name}):\n{}",
            String::from_utf8_lossy(bytes).escape_debug()
        );
    }
    // The summary: final orders and orders held by policy apart, adding up to every order
    // that publishes events (400 valid + 5 invalid ones with a readable order id).
    let finals = number_after(&stdout, "final:");
    let expected = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("final:"))
        .and_then(|l| l.split(" of ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no `final: N of M` in\n{stdout}"));
    assert_eq!(expected, 405, "{stdout}");
    let held = number_after(&stdout, "held, not final:");
    assert!(
        held > 0,
        "this seed has life-support meters with disconnects: {stdout}"
    );
    assert!(stdout.contains("awaiting approval"), "{stdout}");
    assert_eq!(finals + held, expected, "{stdout}");
    // Only final statuses are listed as final outcomes.
    let outcomes = stdout
        .split("final outcomes (status / reason):")
        .nth(1)
        .unwrap_or_else(|| panic!("no outcomes in\n{stdout}"));
    let listed: usize = outcomes
        .lines()
        .filter(|l| l.contains(" / "))
        .map(|l| {
            assert!(
                !l.contains("awaiting_approval") && !l.contains("deferred"),
                "a held order listed as a final outcome: {l}"
            );
            l.split_whitespace()
                .last()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(listed, finals, "{stdout}");
}

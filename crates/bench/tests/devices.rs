//! `--scenario devices` end to end at a small scale, as an operator runs
//! it: the bench binary with its own Mosquitto (`/usr/sbin/mosquitto`), the
//! debug gateway next to it (`cargo build -p chouquette` first) and the
//! regular devices in worker processes. Both real: nothing is mocked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

/// The gateway binary built beside this bench (same profile).
fn gateway() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_chouquette-bench")).with_file_name("chouquette");
    assert!(
        path.exists(),
        "the gateway binary {} is missing: build it first (cargo build -p chouquette)",
        path.display()
    );
    path
}

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chouquette-bench"))
        .args(["--scenario", "devices", "--gateway"])
        .arg(gateway())
        .args(args)
        .output()
        .expect("run chouquette-bench")
}

/// The report's JSON line (the last line of stdout).
fn report(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn devices_spread_over_worker_processes_deliver_every_message_once() {
    // 300 devices every second from 3 worker processes, a flush of 300.
    // The send-lag limit is lenient: a debug build on a shared machine.
    let output = bench(&[
        "-n",
        "300",
        "--workers",
        "3",
        "--device-interval",
        "1s",
        "--warmup",
        "1s",
        "--duration",
        "4s",
        "--flush-messages",
        "300",
        "--max-send-lag",
        "2s",
    ]);
    let r = report(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {}: {stderr}", output.status);
    assert!(
        stderr.contains("from 3 worker processes"),
        "the devices ran in workers: {stderr}"
    );
    let g = &r["generator"];
    assert_eq!(g["workers"], 3, "{r}");
    assert_eq!(g["due"], 1200, "300 devices x 4 s: {r}");
    assert!(g["shortfalls"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(r["connected"], 300, "{r}");
    // Every message of the window came from the workers and arrived once.
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent >= 1188, "{r}");
    assert_eq!(r["acked"], sent, "{r}");
    assert_eq!(r["delivered"], sent, "{r}");
    for exactness in [&r["exactness"], &r["flush"]["exactness"]] {
        assert_eq!(exactness["lost"], 0, "{r}");
        assert_eq!(exactness["duplicated"], 0, "{r}");
        assert_eq!(exactness["unexpected"], 0, "{r}");
    }
    assert_eq!(r["flush"]["received"], 300, "{r}");
    assert!(r["drained_s"].is_number(), "{r}");
    assert!(r["mosquitto_open_files"].as_u64().unwrap() >= 300, "{r}");
}

#[test]
fn a_generator_that_cannot_keep_up_fails_the_run() {
    // 50 devices every millisecond from one worker: 50,000 messages/s, far
    // more than one debug process with 4 messages in flight per device.
    let output = bench(&[
        "-n",
        "50",
        "--workers",
        "1",
        "--device-interval",
        "1ms",
        "--warmup",
        "1s",
        "--duration",
        "2s",
        "--flush-messages",
        "10",
    ]);
    let r = report(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it must fail: {stdout}");
    assert!(
        stderr.contains("the load generator did not produce the intended load"),
        "{stderr}"
    );
    assert!(stdout.contains("GENERATOR FELL SHORT"), "{stdout}");
    let g = &r["generator"];
    assert_eq!(g["due"], 100_000, "{r}");
    assert!(g["sent_per_s"].as_f64().unwrap() < g["target_per_s"].as_f64().unwrap() * 0.99);
}

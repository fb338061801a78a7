//! Ctrl-C during a calibration stops it between measurements and leaves nothing behind: the
//! real binary, a real signal.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `kvreplay ARGS`, sends SIGINT after `after`, and returns (exit code, stderr).
fn interrupt(args: &[&str], after: Duration) -> (Option<i32>, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_kvreplay"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    // SAFETY: `kill` with a child's pid and SIGINT has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let t0 = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(60), "stopped promptly");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Regression: Ctrl-C during `calibrate disk` left its chunk files in
/// `DIR/kvreplay-calibrate-PID`.
#[test]
fn ctrl_c_during_calibrate_disk_leaves_no_files() {
    let dir = std::env::temp_dir().join(format!("kvr-interrupt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display().to_string();
    let out = dir.join("p.json").display().to_string();
    let (code, err) = interrupt(
        &["calibrate", "disk", "--dir", &d, "-o", &out],
        Duration::from_millis(700),
    );
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!Path::new(&out).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Regression: Ctrl-C during `calibrate redis` left its keys (up to ~160 MB) in the user's
/// Redis.
#[cfg(feature = "redis")]
#[test]
fn ctrl_c_during_calibrate_redis_leaves_no_keys() {
    use kvreplay::calibrate::redis::{LocalRedis, connect};
    let r = LocalRedis::start(&[]).unwrap();
    let url = r.url();
    let out = std::env::temp_dir().join(format!("kvr-interrupt-redis-{}.json", std::process::id()));
    let o = out.display().to_string();
    let (code, err) = interrupt(
        &["calibrate", "redis", "--url", &url, "-o", &o],
        Duration::from_millis(1500),
    );
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let mut c = connect(&url).unwrap();
    let n: u64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 0, "calibration keys left behind");
    assert!(!out.exists());
}

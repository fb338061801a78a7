//! Replays every committed fuzz input (`fuzz/seeds/<target>/` and `fuzz/regressions/<target>/`)
//! through the library entry point of its target, so that a plain `cargo test` guards every
//! fuzzing finding without libFuzzer.

use kvreplay::fuzzing::TARGETS;
use std::path::{Path, PathBuf};

fn folders(kind: &str) -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind);
    let Ok(rd) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    out
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Targets whose entry points need a Cargo feature this build may lack.
const GATED: &[&str] = &["sse", "prom", "report_slo"];

fn replay(kind: &str) -> usize {
    let mut n = 0;
    let mut failed = Vec::new();
    for (target, dir) in folders(kind) {
        let Some((_, entry)) = TARGETS.iter().find(|(t, _)| *t == target) else {
            assert!(
                GATED.contains(&target.as_str()),
                "fuzz/{kind}/{target}: no such fuzz target"
            );
            eprintln!("fuzz/{kind}/{target}: its entry point is not built with these features");
            continue;
        };
        for f in files(&dir) {
            let data = std::fs::read(&f).unwrap();
            n += 1;
            if std::panic::catch_unwind(|| entry(&data)).is_err() {
                failed.push(f.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "panicked on: {failed:?}");
    n
}

#[test]
fn every_seed_runs_through_its_target_without_a_panic() {
    let n = replay("seeds");
    assert!(n >= TARGETS.len(), "only {n} seeds");
}

#[test]
fn every_fuzzing_regression_runs_through_its_target_without_a_panic() {
    replay("regressions");
}

#[test]
fn every_target_has_seeds_and_a_fuzz_target() {
    let seeds: Vec<String> = folders("seeds").into_iter().map(|(t, _)| t).collect();
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    for (t, _) in TARGETS {
        assert!(seeds.contains(&t.to_string()), "fuzz/seeds/{t}/ is missing");
        assert!(
            targets.join(format!("{t}.rs")).is_file(),
            "fuzz/fuzz_targets/{t}.rs is missing"
        );
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/seeds")
            .join(t);
        for f in files(&dir) {
            let len = std::fs::metadata(&f).unwrap().len();
            assert!(
                len <= 16 * 1024,
                "{}: {len} bytes, keep seeds small",
                f.display()
            );
        }
    }
}

//! Host-memory calibration: memcpy bandwidth by copy size and thread count.
//!
//! Each thread copies its own preallocated, pre-touched buffers with `copy_from_slice` (what a
//! promotion into the CPU tier or a naive serialisation does), repeated for long enough per point
//! (about 50 ms, 20 ms in a quick run) in three timed trials whose median is kept. Bandwidth is
//! bytes copied per second (not read + written), matching `memcpy_s(bytes) = bytes / bw` of
//! [`crate::cost::TransferProfile`]. `host_memcpy_gbps` is the median of the single-thread points
//! of 1 MiB and more: chunk-sized copies, beyond the caches' small-copy advantage.

use crate::calibrate::profile::{Machine, Section, now_utc};
use crate::error::{Error, Result};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Barrier;
use std::time::{Duration, Instant};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// Memory all buffers of one point may take (2 buffers per thread).
const MEMORY_CAP: usize = 1536 * MIB;
/// Timed trials per point; the median is kept.
const TRIALS: usize = 3;

/// Measures host memcpy bandwidth and returns the `host` section of a transfer profile.
///
/// Sizes 4 KiB to 256 MiB (quick: to 64 MiB) by threads 1, 2, ... up to the available cores
/// (beyond 16 cores: powers of two and the core count); points whose buffers would pass 1.5 GiB
/// are left out.
pub fn calibrate_host(quick: bool) -> Result<Section> {
    let sizes: Vec<usize> = if quick {
        vec![4 * KIB, 64 * KIB, MIB, 16 * MIB, 64 * MIB]
    } else {
        vec![4 * KIB, 64 * KIB, MIB, 16 * MIB, 256 * MIB]
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let target = Duration::from_millis(if quick { 20 } else { 50 });
    run(&sizes, &thread_counts(cores), target, quick)
}

/// 1, 2, ..., `cores` (powers of two and `cores` beyond 16).
fn thread_counts(cores: usize) -> Vec<usize> {
    let cores = cores.max(1);
    if cores <= 16 {
        return (1..=cores).collect();
    }
    let mut v: Vec<usize> = std::iter::successors(Some(1usize), |t| Some(t * 2))
        .take_while(|t| *t < cores)
        .collect();
    v.push(cores);
    v
}

/// The (size, threads) points measured: those whose buffers fit under [`MEMORY_CAP`].
fn plan(sizes: &[usize], threads: &[usize]) -> Vec<(usize, usize)> {
    sizes
        .iter()
        .flat_map(|&s| threads.iter().map(move |&t| (s, t)))
        .filter(|&(s, t)| 2 * s * t <= MEMORY_CAP)
        .collect()
}

/// Copies of `size` bytes per trial so that a single-threaded trial lasts `per_trial`.
fn reps_for(size: usize, per_trial: Duration) -> u64 {
    let src = vec![0x5Au8; size];
    let mut dst = vec![0xA5u8; size];
    dst.copy_from_slice(&src); // warm-up
    let t = Instant::now();
    let mut n = 0u64;
    while n == 0 || t.elapsed() < Duration::from_millis(2) {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
        n += 1;
    }
    let per_copy = t.elapsed().as_secs_f64() / n as f64;
    ((per_trial.as_secs_f64() / per_copy).ceil() as u64).max(1)
}

/// GB/s (copied bytes, all threads together) of each trial.
fn measure(size: usize, threads: usize, reps: u64) -> Vec<f64> {
    let barrier = Barrier::new(threads);
    let spans: Vec<Vec<(Instant, Instant)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    // Allocated and touched by the thread that uses them (first-touch locality).
                    let src = vec![0x5Au8; size];
                    let mut dst = vec![0xA5u8; size];
                    dst.copy_from_slice(&src);
                    let mut spans = Vec::with_capacity(TRIALS);
                    for _ in 0..TRIALS {
                        barrier.wait();
                        let t0 = Instant::now();
                        for _ in 0..reps {
                            dst.copy_from_slice(std::hint::black_box(&src));
                            std::hint::black_box(&mut dst);
                        }
                        spans.push((t0, Instant::now()));
                    }
                    spans
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    (0..TRIALS)
        .map(|i| {
            let start = spans
                .iter()
                .map(|s| s[i].0)
                .min()
                .expect("one thread at least");
            let end = spans
                .iter()
                .map(|s| s[i].1)
                .max()
                .expect("one thread at least");
            let secs = end.duration_since(start).as_secs_f64().max(1e-9);
            (threads as u64 * reps * size as u64) as f64 / secs / 1e9
        })
        .collect()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn size_str(b: usize) -> String {
    if b >= MIB {
        format!("{} MiB", b / MIB)
    } else {
        format!("{} KiB", b / KIB)
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn run(sizes: &[usize], threads: &[usize], target: Duration, quick: bool) -> Result<Section> {
    let per_trial = target / TRIALS as u32;
    let mut reps: BTreeMap<usize, u64> = BTreeMap::new();
    let mut points = Vec::new();
    let mut single = Vec::new();
    for (size, t) in plan(sizes, threads) {
        let r = *reps
            .entry(size)
            .or_insert_with(|| reps_for(size, per_trial));
        let trials = measure(size, t, r);
        let gbps = median(&trials);
        if t == 1 && size >= MIB {
            single.push(gbps);
        }
        points.push(json!({
            "bytes": size,
            "threads": t,
            "reps": r,
            "gb_s": round3(gbps),
            "gb_s_per_thread": round3(gbps / t as f64),
            "trials_gb_s": trials.iter().map(|v| round3(*v)).collect::<Vec<_>>(),
        }));
    }
    let host = median(&single);
    if !(host > 0.0 && host.is_finite()) {
        return Err(Error::Invariant(format!(
            "host memcpy calibration measured no single-thread bandwidth at 1 MiB or more \
             (sizes {sizes:?})"
        )));
    }
    let m = Machine::this();
    let what = format!(
        "host memory copy: copy_from_slice between preallocated, pre-touched buffers, each \
         thread its own; sizes {}; threads {}; about {} ms per point, median of {TRIALS} \
         trials; GB/s = bytes copied per second; {} ({} logical CPUs, {} GiB){}",
        sizes
            .iter()
            .map(|s| size_str(*s))
            .collect::<Vec<_>>()
            .join(", "),
        threads
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        target.as_millis(),
        if m.cpu.is_empty() {
            "unknown CPU"
        } else {
            &m.cpu
        },
        m.cpus,
        m.memory_gib,
        if quick { "; quick run" } else { "" },
    );
    let fit = json!({
        "host_memcpy_gbps": {
            "from": "median of the single-thread points of 1 MiB and more",
            "values": single.iter().map(|v| round3(*v)).collect::<Vec<_>>(),
        },
    });
    Ok(Section {
        what,
        when: now_utc(),
        points: Value::Array(points),
        fit,
        params: BTreeMap::from([("host_memcpy_gbps".to_string(), round3(host))]),
        spread: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_host_calibration_gives_one_positive_point_per_size_and_thread_count() {
        let s = calibrate_host(true).unwrap();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let want = plan(
            &[4 * KIB, 64 * KIB, MIB, 16 * MIB, 64 * MIB],
            &thread_counts(cores),
        );
        let pts = s.points.as_array().unwrap();
        let got: Vec<(usize, usize)> = pts
            .iter()
            .map(|p| {
                (
                    p["bytes"].as_u64().unwrap() as usize,
                    p["threads"].as_u64().unwrap() as usize,
                )
            })
            .collect();
        assert_eq!(got, want);
        for p in pts {
            assert!(p["gb_s"].as_f64().unwrap() > 0.0, "{p}");
        }
        assert!(s.params["host_memcpy_gbps"] > 0.0);
        assert_eq!(
            s.fit["host_memcpy_gbps"]["values"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn small_runs_and_plans() {
        let s = run(
            &[4 * KIB, MIB, 2 * MIB],
            &[1, 2],
            Duration::from_millis(3),
            true,
        )
        .unwrap();
        assert_eq!(s.points.as_array().unwrap().len(), 6);
        assert!(s.params["host_memcpy_gbps"] > 0.0);
        assert_eq!(thread_counts(0), vec![1]);
        assert_eq!(thread_counts(3), vec![1, 2, 3]);
        assert_eq!(thread_counts(48), vec![1, 2, 4, 8, 16, 32, 48]);
        // 256 MiB x 2 buffers x threads stays under 1.5 GiB: 3 threads at most.
        let p = plan(&[256 * MIB], &[1, 2, 3, 4]);
        assert_eq!(p, vec![(256 * MIB, 1), (256 * MIB, 2), (256 * MIB, 3)]);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}

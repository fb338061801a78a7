use super::*;
use crate::metrics::record::{RequestRecord, Status};
use crate::sweep::SweepPoint;
use serde_json::json;
use std::collections::BTreeMap;

fn record(id: u64, input_len: u32, ttft: f64, cpu: bool) -> RequestRecord {
    RequestRecord {
        id,
        round: 0,
        session: None,
        status: Status::Finished,
        reject_reason: None,
        arrival_s: Some(id as f64),
        queue_s: Some(0.001),
        ttft_s: Some(ttft),
        tpot_s: Some(0.01),
        itl_mean_s: Some(0.01),
        itl_max_s: Some(0.02),
        e2e_s: Some(ttft + 1.0),
        input_len,
        output_len: 100,
        tokens_gpu: 0,
        tokens_cpu: if cpu { input_len } else { 0 },
        tokens_disk: 0,
        tokens_remote: 0,
        tokens_computed: if cpu { 0 } else { input_len },
        bytes_loaded: 0,
        bytes_stored: 0,
        preemptions: 0,
        preempted_queries: 0,
        preempted_gpu_hits: 0,
        preempted_external_hits: 0,
        measured_ttft_s: None,
        measured_e2e_s: None,
        replica: None,
        prefill_replica: None,
    }
}

fn runs() -> (Vec<RequestRecord>, Vec<RequestRecord>) {
    let none = (0..60)
        .map(|i| {
            let n = 200 + 300 * i as u32;
            record(i, n, 0.02 + n as f64 * 6e-5, false)
        })
        .collect();
    let cpu = (0..60)
        .map(|i| {
            let n = 200 + 300 * i as u32;
            record(i, n, 0.015 + n as f64 * 4e-6, true)
        })
        .collect();
    (none, cpu)
}

fn point(index: usize, params: serde_json::Value, metrics: &[(&str, f64)]) -> SweepPoint {
    SweepPoint {
        index,
        params: params
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        metrics: metrics
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn rtt_sweep() -> Vec<SweepPoint> {
    let mut v = Vec::new();
    for chunk in [256, 1024] {
        for rtt in [0.1, 1.0, 5.0, 20.0, 50.0] {
            let t = 0.05 + rtt * 1e-3 * (40_000.0 / chunk as f64) / 4.0;
            v.push(point(
                v.len(),
                json!({"rtt_ms": rtt, "chunk_size": chunk, "tier": "remote"}),
                &[("ttft_mean_s", t), ("query_ttft_mean_s", t * 0.8)],
            ));
        }
    }
    v
}

fn cpu_sweep() -> Vec<SweepPoint> {
    [2.0f64, 5.0, 10.0, 20.0, 40.0, 80.0]
        .iter()
        .enumerate()
        .map(|(i, gb)| {
            let cpu = (gb / 66.0f64).min(1.0) * 0.45;
            point(
                i,
                json!({"max_local_cpu_size_gb": gb}),
                &[
                    ("hit_rate_gpu", 0.05),
                    ("hit_rate_cpu", cpu),
                    ("hit_rate_disk", 0.0),
                    ("hit_rate_remote", 0.0),
                    ("hit_rate_total", 0.05 + cpu),
                ],
            )
        })
        .collect()
}

fn qps_sweep() -> Vec<SweepPoint> {
    [0.5f64, 1.0, 2.0, 4.0, 8.0, 16.0]
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let tps = 2000.0 * q.min(5.0);
            let p99 = 0.3 * (1.0 + (q / 4.0f64).powi(4));
            point(
                i,
                json!({"qps_scale": q}),
                &[("output_tps", tps), ("ttft_p99_s", p99)],
            )
        })
        .collect()
}

fn validation() -> Vec<ValidationPoint> {
    let mut v = Vec::new();
    for run in 0..6 {
        for (metric, m) in [
            ("ttft_mean_s", 0.2),
            ("output_tps", 3000.0),
            ("e2e_mean_s", 4.0),
        ] {
            let meas = m * (1.0 + run as f64);
            let err = 1.0 + 0.07 * ((run * 7 + metric.len()) % 9) as f64 - 0.25;
            v.push(ValidationPoint {
                study: "lmcache_cpu".into(),
                run,
                fit: run < 2,
                metric: metric.into(),
                predicted: meas * err,
                measured: meas,
            });
        }
    }
    v
}

/// Every figure the tests draw, with a name (written under $KVREPLAY_PLOT_DIR when set, to
/// look at them).
fn figures() -> Vec<(&'static str, Figure, Vec<&'static str>)> {
    let (none, cpu) = runs();
    let labelled: Vec<(&str, &[RequestRecord])> = vec![("none", &none), ("cpu", &cpu)];
    let slo = Slo {
        metric: "ttft_p99_s".into(),
        threshold: 1.0,
    };
    // Every prompt 10,000 tokens, a warm-up and a query round: drawn per configuration.
    let same = |hit: bool| -> Vec<RequestRecord> {
        (0..40)
            .map(|i| {
                let mut r = record(i, 10_000 + (i as u32 % 3), 0.5 + 0.01 * i as f64, false);
                r.round = (i >= 20) as u32;
                if hit && r.round == 1 {
                    r.ttft_s = Some(0.08 + 0.001 * i as f64);
                }
                r
            })
            .collect()
    };
    let (a, b) = (same(false), same(true));
    let rounds: Vec<(&str, &[RequestRecord])> = vec![("none", &a), ("cpu", &b), ("native", &b)];
    let figs = vec![
        (
            "ttft_per_configuration",
            ttft_vs_prompt(&rounds).unwrap(),
            vec![
                "Time to first token per configuration",
                "round 1 (query)",
                "\nnative\n",
            ],
        ),
        (
            "ttft_vs_prompt",
            ttft_vs_prompt(&labelled).unwrap(),
            vec![
                "Time to first token vs prompt length",
                "prompt length",
                "TTFT (s",
            ],
        ),
        (
            "e2e_vs_prompt",
            e2e_vs_prompt(&labelled).unwrap(),
            vec!["End-to-end latency vs prompt length", "E2E latency (s"],
        ),
        (
            "ttft_vs_rtt",
            ttft_vs_rtt(&rtt_sweep(), "query_ttft_mean_s").unwrap(),
            vec![
                "round-trip time (ms",
                "query-round TTFT mean (s",
                "chunk_size=256",
            ],
        ),
        (
            "hit_rate_vs_cpu",
            hit_rate_vs_cpu(&cpu_sweep()).unwrap(),
            vec![
                "Prompt tokens served by each tier",
                "share of prompt tokens (%)",
                "CPU tier",
            ],
        ),
        (
            "throughput_vs_qps",
            throughput_vs_qps(&qps_sweep(), "output_tps", Some(&slo), Some(4.0)).unwrap(),
            vec![
                "output throughput (tok/s)",
                "SLO threshold: 1 s",
                "max sustainable rate: 4 × the trace",
            ],
        ),
        (
            "validation",
            predicted_vs_measured(&validation()).unwrap(),
            vec![
                "predicted vs measured",
                "measured (",
                "predicted by kvreplay",
                "check runs",
            ],
        ),
    ];
    if let Ok(dir) = std::env::var("KVREPLAY_PLOT_DIR") {
        for (name, f, _) in &figs {
            f.write(&std::path::Path::new(&dir).join(name)).unwrap();
        }
    }
    figs
}

fn png_size(png: &[u8]) -> (u32, u32) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

#[test]
fn every_plot_renders_svg_and_png_with_its_words() {
    for (name, f, words) in figures() {
        assert!(f.svg.starts_with("<svg"), "{name}: {}", &f.svg[..40]);
        assert!(f.svg.trim_end().ends_with("</svg>"), "{name}");
        assert!(f.svg.contains(&format!("width=\"{}\"", f.width)), "{name}");
        for w in words {
            assert!(
                f.svg.contains(&w.replace('&', "&amp;")),
                "{name}: {w:?} missing"
            );
        }
        assert_eq!(png_size(&f.png), (f.width, f.height), "{name}");
        assert!(!f.inline_svg().contains("http"), "{name}");
    }
}

#[test]
fn plots_are_byte_identical_when_drawn_again() {
    let a = figures();
    let b = figures();
    for ((name, x, _), (_, y, _)) in a.iter().zip(&b) {
        assert!(x.svg == y.svg, "{name}: SVG differs");
        assert!(x.png == y.png, "{name}: PNG differs");
    }
}

#[test]
fn empty_inputs_are_named_errors() {
    let e = ttft_vs_prompt(&[("x", &[])]).unwrap_err().to_string();
    assert!(e.contains("no finished request"), "{e}");
    let e = ttft_vs_rtt(&cpu_sweep(), "ttft_mean_s")
        .unwrap_err()
        .to_string();
    assert!(e.contains("rtt_ms"), "{e}");
    let e = hit_rate_vs_cpu(&rtt_sweep()).unwrap_err().to_string();
    assert!(e.contains("CPU tier size"), "{e}");
    let e = throughput_vs_qps(&qps_sweep(), "nope_tps", None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope_tps"), "{e}");
}

#[test]
fn figures_write_png_and_svg_beside_each_other() {
    let dir = std::env::temp_dir().join(format!("kvreplay-plot-{}", std::process::id()));
    let f = hit_rate_vs_cpu(&cpu_sweep()).unwrap();
    let (png, svg) = f.write(&dir.join("hits")).unwrap();
    assert_eq!(png, dir.join("hits.png"));
    assert_eq!(std::fs::read(&svg).unwrap(), f.svg.as_bytes());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn replica_load_draws_a_line_per_replica_and_refuses_no_samples() {
    use crate::sim::KvSample;
    let series = |k: u32| {
        (0..20)
            .map(|i| KvSample {
                t_s: i as f64,
                used: (i * k) as f64 / 100.0,
                running: k,
                waiting: i % 3,
            })
            .collect::<Vec<_>>()
    };
    let fig = replica_load(&[series(1), series(2), series(3)]).unwrap();
    let svg = fig.inline_svg();
    assert!(svg.contains("Requests in flight") && svg.contains("GPU KV usage"));
    assert!(replica_load(&[Vec::new(), Vec::new()]).is_err());
    let many: Vec<Vec<KvSample>> = (0..20).map(|_| series(1)).collect();
    assert!(
        replica_load(&many)
            .unwrap()
            .inline_svg()
            .contains("replicas 0-15 of 20 shown")
    );
}

//! Output files: round trip of `requests.parquet`, contents of the JSON files, determinism.

use super::*;
use crate::metrics::record::records;
use crate::testkit::mixed;
use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use arrow_array::{Array, Float64Array, StringArray, UInt32Array, UInt64Array};
use std::path::PathBuf;

/// Writes the run's files from its records and summary; returns the summary.
fn write_run(
    dir: &std::path::Path,
    t: &crate::trace::Trace,
    r: &SimResult,
    config: &serde_json::Value,
) -> Result<RunSummary> {
    let recs = crate::metrics::record::records(t, r);
    let summary = RunSummary::new(&recs, r);
    write_parts(dir, &recs, &summary, r, config)?;
    Ok(summary)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvr-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config() -> serde_json::Value {
    serde_json::json!({"model": "meta-llama/Llama-3.1-8B", "gpu": "H100", "seed": 1, "z": [1.5, 2]})
}

#[test]
fn requests_parquet_round_trips() {
    let (t, r) = mixed();
    let dir = tmp("pq");
    let s = write_run(&dir, &t, &r, &config()).unwrap();
    assert_eq!((s.simulated, s.rejected), (3, 1));
    let f = std::fs::File::open(dir.join("requests.parquet")).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 1);
    let b = &batches[0];
    assert_eq!(b.num_rows(), 4);
    assert_eq!(b.num_columns(), 27);
    let col = |n: &str| b.column_by_name(n).unwrap().clone();
    let id = col("id");
    let id = id.as_any().downcast_ref::<UInt64Array>().unwrap();
    assert_eq!(id.values().to_vec(), vec![0, 1, 2, 3]);
    let status = col("status");
    let status = status.as_any().downcast_ref::<StringArray>().unwrap();
    let st: Vec<&str> = (0..4).map(|i| status.value(i)).collect();
    assert_eq!(st, ["finished", "finished", "rejected", "finished"]);
    let ttft = col("ttft_s");
    let ttft = ttft.as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(ttft.value(0), 0.01);
    assert_eq!(ttft.value(1), 0.03);
    assert!(ttft.is_null(2));
    let tpot = col("tpot_s");
    let tpot = tpot.as_any().downcast_ref::<Float64Array>().unwrap();
    assert!(tpot.is_null(1));
    assert_eq!(tpot.value(3), 0.01);
    let reason = col("reject_reason");
    let reason = reason.as_any().downcast_ref::<StringArray>().unwrap();
    assert!(reason.is_null(0));
    assert!(reason.value(2).contains("max_model_len"));
    let session = col("session");
    let session = session.as_any().downcast_ref::<UInt64Array>().unwrap();
    assert!(session.is_null(0));
    assert_eq!(session.value(3), 9);
    let computed = col("tokens_computed");
    let computed = computed.as_any().downcast_ref::<UInt32Array>().unwrap();
    assert_eq!(computed.values().to_vec(), vec![100, 100, 0, 100]);
    let m = col("measured_e2e_s");
    let m = m.as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!((m.null_count(), m.value(3)), (3, 0.035));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_files_hold_config_summary_and_samples() {
    let (t, r) = mixed();
    let dir = tmp("json");
    let s = write_run(&dir, &t, &r, &config()).unwrap();
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["config"], config());
    assert_eq!(v["summary"]["simulated"], 3);
    assert_eq!(
        v["summary"]["rejected_by_reason"]["exceeds max_model_len"],
        1
    );
    assert_eq!(v["summary"]["tpot"]["n"], 2);
    assert_eq!(v["summary"]["ttft"]["max"], 0.03);
    // Every summary field is present; in the text the order is the struct's, config first.
    let keys: Vec<&str> = v["summary"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys.len(), 31);
    assert!(text.find("\"config\"").unwrap() < text.find("\"summary\"").unwrap());
    assert!(text.find("\"requests_in\"").unwrap() < text.find("\"offload\"").unwrap());
    let kv: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("kv_usage.json")).unwrap()).unwrap();
    assert_eq!(kv["num_gpu_blocks"], s.num_gpu_blocks);
    assert_eq!(kv["samples"].as_array().unwrap().len(), r.kv_samples.len());
    assert!(!r.kv_samples.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn identical_inputs_give_identical_bytes() {
    let (t, r) = mixed();
    let (a, b) = (tmp("det-a"), tmp("det-b"));
    let sa = write_run(&a, &t, &r, &config()).unwrap();
    let (t2, r2) = mixed();
    let sb = write_run(&b, &t2, &r2, &config()).unwrap();
    for f in ["requests.parquet", "summary.json", "kv_usage.json"] {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(!x.is_empty());
        assert_eq!(x, y, "{f} differs");
    }
    assert_eq!(print_summary(&sa), print_summary(&sb));
    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(&b).unwrap();
}

#[test]
fn printed_summary_accounts_for_every_request() {
    let (t, r) = mixed();
    let recs = records(&t, &r);
    let s = RunSummary::new(&recs, &r);
    let text = print_summary(&s);
    assert!(
        text.starts_with(
            "requests     in 4 = simulated 3 + rejected 1 (exceeds max_model_len: 1)\n"
        ),
        "{text}"
    );
    // TTFT 10, 30, 10 ms: mean 16.67, p50 10, p90 26, p99 29.6, max 30.
    assert!(
        text.contains("  TTFT             16.67       10.00       26.00       29.60       30.00\n"),
        "{text}"
    );
    assert!(text.contains("  TPOT             10.00"), "{text}");
    assert!(text.contains("duration     0.130 s"), "{text}");
    assert!(text.contains("computed 100.0%"), "{text}");
    assert!(
        text.contains("offload      loaded 0 B   stored 0 B"),
        "{text}"
    );
}

//! The live client against a mock OpenAI-compatible server on loopback that streams tokens with
//! known delays: checks our scheduling and timing code, not a real engine.

use super::*;
use crate::testkit::{MS, pooled, req, trace};
use crate::trace::Run;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

/// One completion the mock served: when it arrived and finished, seconds since the mock started.
#[derive(Debug, Clone, Copy)]
struct Hit {
    start: f64,
    end: f64,
}

#[derive(Default)]
struct MockState {
    hits: Vec<Hit>,
    prompts: Vec<Vec<u64>>,
    queries: u64,
    cached: u64,
}

/// A mock server: model name `mock`; first token after `ttft_ms`, then one token every `gap_ms`.
/// `max_tokens` 77 answers HTTP 500, 78 drops the stream after two tokens, 79 stalls for 3 s
/// before answering. It reports `cached_tokens` as the longest prefix, in blocks of 4 ids, that
/// the prompt shares with an earlier one, and counts queries and hits in `/metrics`.
struct Mock {
    url: String,
    state: Arc<Mutex<MockState>>,
}

fn mock(ttft_ms: u64, gap_ms: u64) -> Mock {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(MockState::default()));
    let st = state.clone();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let st = st.clone();
            std::thread::spawn(move || {
                let _ = serve(conn, &st, t0, ttft_ms, gap_ms);
            });
        }
    });
    Mock { url, state }
}

fn serve(
    conn: TcpStream,
    st: &Mutex<MockState>,
    t0: Instant,
    ttft_ms: u64,
    gap_ms: u64,
) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    let mut first = String::new();
    r.read_line(&mut first)?;
    let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let start = t0.elapsed().as_secs_f64();
    let plain = |w: &mut TcpStream, status: &str, text: &str| {
        write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )
    };
    match path.as_str() {
        "/v1/models" => return plain(&mut w, "200 OK", r#"{"data":[{"id":"mock"}]}"#),
        "/metrics" => {
            let s = st.lock().unwrap();
            let text = format!(
                "# TYPE vllm:prefix_cache_queries counter\nvllm:prefix_cache_queries_total{{engine=\"0\"}} {}\nvllm:prefix_cache_hits_total{{engine=\"0\"}} {}\nvllm:cache_config_info{{block_size=\"4\",num_gpu_blocks=\"99\"}} 1.0\n",
                s.queries, s.cached
            );
            return plain(&mut w, "200 OK", &text);
        }
        "/reset_prefix_cache" => {
            st.lock().unwrap().prompts.clear();
            return plain(&mut w, "200 OK", r#"{"success":true}"#);
        }
        "/v1/completions" => {}
        _ => return plain(&mut w, "404 Not Found", "no"),
    }
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["stream"], true);
    assert_eq!(v["stream_options"]["include_usage"], true);
    assert_eq!(v["model"], "mock");
    let n = v["max_tokens"].as_u64().unwrap();
    assert_eq!(v["min_tokens"].as_u64(), Some(n));
    assert_eq!(v["ignore_eos"], true);
    let prompt: Vec<u64> = v["prompt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    match n {
        77 => return plain(&mut w, "500 Internal Server Error", r#"{"error":"boom"}"#),
        79 => {
            std::thread::sleep(Duration::from_secs(3));
            return plain(&mut w, "200 OK", "");
        }
        _ => {}
    }
    let cached = {
        let mut s = st.lock().unwrap();
        let best = s
            .prompts
            .iter()
            .map(|p| p.iter().zip(&prompt).take_while(|(a, b)| a == b).count())
            .max()
            .unwrap_or(0);
        let cached = (best.min(prompt.len() - 1) / 4 * 4) as u64;
        s.prompts.push(prompt.clone());
        s.queries += prompt.len() as u64;
        s.cached += cached;
        cached
    };
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )?;
    let chunk = |w: &mut TcpStream, data: &str| -> std::io::Result<()> {
        let ev = format!("data: {data}\n\n");
        write!(w, "{:x}\r\n{ev}\r\n", ev.len())?;
        w.flush()
    };
    std::thread::sleep(Duration::from_millis(ttft_ms));
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(gap_ms));
        }
        if n == 78 && i == 2 {
            // Drop the connection mid-stream.
            return Ok(());
        }
        chunk(
            &mut w,
            r#"{"object":"text_completion","choices":[{"index":0,"text":" x","finish_reason":null}],"usage":null}"#,
        )?;
    }
    chunk(
        &mut w,
        &json!({"choices": [], "usage": {"prompt_tokens": prompt.len(), "completion_tokens": n,
            "prompt_tokens_details": {"cached_tokens": cached}}})
        .to_string(),
    )?;
    chunk(&mut w, "[DONE]")?;
    write!(w, "0\r\n\r\n")?;
    w.flush()?;
    st.lock().unwrap().hits.push(Hit {
        start,
        end: t0.elapsed().as_secs_f64(),
    });
    Ok(())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvr-live-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn opts(m: &Mock) -> LiveOptions {
    let mut o = LiveOptions::new(format!("{}/v1/", m.url));
    o.tokens = TokenMap::new(1000, 4).unwrap();
    o.timeout = Duration::from_secs(1);
    o.metrics_settle = Duration::from_millis(10);
    o
}

fn near(x: Option<f64>, want: f64, tol: f64) -> bool {
    x.is_some_and(|x| (x - want).abs() <= tol)
}

#[test]
fn open_loop_requests_are_sent_on_time_and_timed() {
    let m = mock(40, 15);
    // Request 1 repeats request 0's first 8 tokens (two mock blocks), request 2 shares nothing.
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 10)], 4),
        req(1, 150, vec![Run::new(1, 0, 9), Run::new(2, 0, 3)], 4),
        req(2, 300, vec![Run::new(3, 0, 10)], 1),
    ]);
    let dir = tmp("open");
    let out = run_live(&t, &opts(&m), &dir, "t.jsonl").unwrap();
    let recs = compare::read_requests(&dir.join("requests.parquet")).unwrap();
    assert_eq!(recs.len(), 3);
    for (r, at) in recs.iter().zip([0.0, 0.15, 0.3]) {
        assert!(r.finished(), "{r:?}");
        assert!(near(r.arrival_s, at, 0.03), "{r:?}");
        assert!(near(r.ttft_s, 0.040, 0.03), "{r:?}");
        assert_eq!(r.queue_s, None);
    }
    assert_eq!(recs[0].output_len, 4);
    assert!(near(recs[0].tpot_s, 0.015, 0.012), "{:?}", recs[0]);
    assert!(near(recs[0].e2e_s, 0.040 + 3.0 * 0.015, 0.04));
    assert!(recs[0].itl_max_s.unwrap() >= recs[0].itl_mean_s.unwrap());
    assert_eq!(recs[2].tpot_s, None);
    // The mock's prefix cache saw the shared 9 tokens: 8 cached, in whole blocks.
    assert_eq!((recs[0].tokens_gpu, recs[0].tokens_computed), (0, 10));
    assert_eq!((recs[1].tokens_gpu, recs[1].tokens_computed), (8, 4));
    let s = &out["summary"];
    assert_eq!(
        (s["finished"].as_u64(), s["failed"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(s["output_tokens"], 9);
    assert_eq!(s["itl"]["n"], 6);
    assert_eq!(s["cached_tokens"], 8);
    let pc = &out["server"]["prefix_cache"];
    assert_eq!(pc["primary"], "vllm:prefix_cache");
    assert_eq!(pc["counters"]["vllm:prefix_cache"]["queries"], 32.0);
    assert_eq!(pc["counters"]["vllm:prefix_cache"]["hits"], 8.0);
    assert_eq!(out["server"]["cache_config"]["num_gpu_blocks"], "99");
    assert_eq!(out["config"]["model"], "mock");
    for f in ["metrics_before.txt", "metrics_after.txt", "summary.json"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let lines: Vec<Value> = std::fs::read_to_string(dir.join("live_requests.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["itl_s"].as_array().unwrap().len(), 3);
    assert!(lines[0]["itl_s"][0].as_f64().unwrap() > 0.005);
    assert_eq!(lines[1]["cached_tokens"], 8);

    // Compared with itself: no error, and the reported hits agree with the server's counters.
    let c = compare_live(&dir, &dir).unwrap();
    assert_eq!(c["requests"]["finished_both"], 3);
    assert_eq!(c["aggregate"]["ttft"]["mean"]["rel_error"], 0.0);
    assert_eq!(c["prefix_cache"]["predicted_hit_tokens"], 8);
    assert_eq!(c["prefix_cache"]["diff_pp_vs_server"], 0.0);
    assert_eq!(c["per_request"].as_array().unwrap().len(), 3);

    // And with a simulator prediction of the same trace, read back from `run`'s files.
    let pdir = tmp("open-pred");
    let o = crate::pipeline::run(&t, &crate::config::RunConfig::default()).unwrap();
    crate::report::write_run(&pdir, &o, &json!({})).unwrap();
    let c = compare_live(&dir, &pdir).unwrap();
    assert_eq!(c["requests"]["matched"], 3);
    assert_eq!(c["aggregate"]["e2e"]["n"], 3);
    assert!(c["throughput"]["predicted"]["output_tps"].as_f64().unwrap() > 0.0);
    let pred = compare::read_requests(&pdir.join("requests.parquet")).unwrap();
    assert_eq!(pred, o.records);
    // Run again: the mock's cache remembers the prompts, unless it is reset first.
    let again = run_live(&t, &opts(&m), &dir, "t").unwrap();
    assert_eq!(again["summary"]["cached_tokens"], 8 + 8 + 8);
    let mut o = opts(&m);
    o.reset_prefix_cache = true;
    let reset = run_live(&t, &o, &dir, "t").unwrap();
    assert_eq!(reset["summary"]["cached_tokens"], 8);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&pdir);
}

#[test]
fn closed_loop_clients_follow_the_contract() {
    let m = mock(20, 10);
    let p = |c: u64| vec![Run::new(c, 0, 8)];
    // Two clients. Session 7: three requests, 100 ms think time after each. Session 8: one
    // request. Then round 1: two single requests that must wait for all of round 0.
    let mut rs = vec![
        req(0, 0, p(10), 3),
        req(1, 0, p(11), 3),
        req(2, 0, p(12), 3),
        req(3, 0, p(13), 3),
        req(4, 0, p(14), 3),
        req(5, 0, p(15), 3),
    ];
    for r in &mut rs[..3] {
        r.session = Some(7);
        r.think_ns = 100 * MS;
    }
    rs[3].session = Some(8);
    rs[4].round = 1;
    rs[5].round = 1;
    let t = pooled(rs, 2);
    let slots = {
        let o = opts(&m);
        let agent = client::agent(o.timeout);
        let url = format!("{}/v1/completions", m.url);
        schedule(&t, |i, t0| {
            let body = request_body("mock", &t.requests[i], &o.tokens, true);
            client::stream_completion(&agent, &url, &body, t0, o.timeout)
        })
    };
    let sent: Vec<&Outcome> = slots
        .iter()
        .map(|s| match s {
            Slot::Sent(o) => o,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(sent.iter().all(|o| o.error.is_none()), "{sent:?}");
    let end = |o: &Outcome| *o.chunk_ns.last().unwrap();
    // The session's requests go in order, each after the previous one's end plus think time.
    for k in 1..3 {
        assert!(sent[k].send_ns >= end(sent[k - 1]) + 100 * MS, "{k}");
    }
    // Round 1 starts after every round-0 request completed.
    let round0_end = sent[..4].iter().map(|o| end(o)).max().unwrap();
    assert!(sent[4].send_ns >= round0_end && sent[5].send_ns >= round0_end);
    // Never more than two in flight at the server.
    let hits = m.state.lock().unwrap().hits.clone();
    assert_eq!(hits.len(), 6);
    for h in &hits {
        let at_once = hits
            .iter()
            .filter(|o| o.start <= h.start + 1e-4 && o.end > h.start + 1e-4)
            .count();
        assert!(at_once <= 2, "{at_once} in flight at {}", h.start);
    }
}

#[test]
fn early_stop_abandons_unsent_requests() {
    let m = mock(10, 15);
    // Two clients, early stop: session 1 is one short request, session 2 three long ones. The
    // client of session 1 finds the queue empty first and stops the pool.
    let mut rs = vec![
        req(0, 0, vec![Run::new(1, 0, 8)], 1),
        req(1, 0, vec![Run::new(2, 0, 8)], 12),
        req(2, 0, vec![Run::new(3, 0, 8)], 12),
        req(3, 0, vec![Run::new(4, 0, 8)], 12),
    ];
    rs[0].session = Some(1);
    for r in &mut rs[1..] {
        r.session = Some(2);
    }
    let mut t = pooled(rs, 2);
    t.meta.pools[0].early_stop = true;
    let dir = tmp("early");
    let out = run_live(&t, &opts(&m), &dir, "t").unwrap();
    let recs = compare::read_requests(&dir.join("requests.parquet")).unwrap();
    assert!(recs[0].finished() && recs[1].finished());
    for r in &recs[2..] {
        assert_eq!(
            r.reject_reason.as_ref().map(|r| r.to_string()).as_deref(),
            Some(ABANDONED)
        );
        assert_eq!(r.arrival_s, None);
    }
    assert_eq!(
        out["summary"]["failed_by_reason"]["abandoned by early stop"],
        2
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn failures_are_recorded_per_request() {
    let m = mock(10, 5);
    let t = trace(vec![
        req(0, 0, vec![Run::new(1, 0, 8)], 3),
        req(1, 0, vec![Run::new(2, 0, 8)], 77),
        req(2, 0, vec![Run::new(3, 0, 8)], 78),
        req(3, 0, vec![Run::new(4, 0, 8)], 79),
    ]);
    let dir = tmp("fail");
    let out = run_live(&t, &opts(&m), &dir, "t").unwrap();
    let recs = compare::read_requests(&dir.join("requests.parquet")).unwrap();
    assert!(recs[0].finished());
    let why = |i: usize| {
        recs[i]
            .reject_reason
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_default()
    };
    assert!(
        why(1).starts_with("HTTP 500: {\"error\":\"boom\"}"),
        "{}",
        why(1)
    );
    assert!(why(2).starts_with("stream dropped"), "{}", why(2));
    assert!(why(3).starts_with("timeout after 1 s"), "{}", why(3));
    for r in &recs[1..] {
        assert!(!r.finished() && r.arrival_s.is_some() && r.ttft_s.is_none());
    }
    let by = &out["summary"]["failed_by_reason"];
    assert_eq!(
        (by["HTTP 500"].as_u64(), by["timeout"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(by["stream dropped"], 1);

    // No server at all: every request fails, the run still completes.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut o = LiveOptions::new(url.clone());
    o.model = Some("m".into());
    o.timeout = Duration::from_secs(2);
    o.metrics_settle = Duration::ZERO;
    let out = run_live(&t, &o, &dir, "t").unwrap();
    assert_eq!(out["summary"]["failed"], 4);
    assert_eq!(out["server"]["metrics_scraped"], false);
    // Without --model the server must answer /v1/models.
    o.model = None;
    assert!(run_live(&t, &o, &dir, "t").is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bodies_urls_and_error_kinds() {
    let map = TokenMap::new(100, 4).unwrap();
    let r = req(5, 0, vec![Run::new(9, 0, 3)], 0);
    let b: Value = serde_json::from_str(&request_body("m", &r, &map, false)).unwrap();
    assert_eq!(b["max_tokens"], 1);
    assert!(b.get("min_tokens").is_none() && b.get("ignore_eos").is_none());
    assert_eq!(
        b["prompt"],
        json!(map.prompt(&r.prompt)),
        "prompt is the mapped ids"
    );
    assert_eq!(base_url("http://h:1/v1/"), "http://h:1");
    assert_eq!(base_url("http://h:1"), "http://h:1");
    assert_eq!(error_kind("HTTP 400: bad"), "HTTP 400");
    assert_eq!(error_kind("timeout after 5 s"), "timeout");
    assert_eq!(error_kind("connection: refused"), "connection");
    assert_eq!(error_kind(ABANDONED), "abandoned by early stop");
}

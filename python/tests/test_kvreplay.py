"""The Python package against the command line and against hand-computed cases."""

import json
import re
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import kvreplay
from kvreplay import KvreplayError, Trace


def small_doc_qa(**kw):
    p = dict(num_documents=4, document_length=3000, output_len=20, repeat_count=1,
             max_inflight_requests=2)
    p.update(kw)
    return kvreplay.gen.long_doc_qa(seed=0, **p)


def shared_prefix_table(shared=1000, own=200, n=3):
    """``n`` prompts: ``shared`` tokens of content 1, then ``own`` tokens of their own; one
    request at a time (10 s apart), one output token each."""
    return pa.table({
        "id": list(range(n)),
        "arrival_ns": [i * 10_000_000_000 for i in range(n)],
        "input_len": [shared + own] * n,
        "output_len": [1] * n,
        "prompt_content": [[1, 100 + i] for i in range(n)],
        "prompt_offset": [[0, 0]] * n,
        "prompt_len": [[shared, own]] * n,
    })


# --- the same results as the CLI ---------------------------------------------------------

def cli_run(cli, trace_path, out, sets):
    args = [cli, "run", "--trace", str(trace_path), "-o", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    subprocess.run(args, check=True, capture_output=True, text=True)
    return pq.read_table(out / "requests.parquet"), json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("sets", [
    {"tier": "cpu", "max_local_cpu_size": 4, "chunk_size": 256},
    {"tier": "none"},
    {"tier": "remote", "rtt_ms": 20, "max_local_cpu_size": 1},
])
def test_run_equals_the_cli(cli, tmp_path, sets):
    t = small_doc_qa()
    path = tmp_path / "t.jsonl"
    t.write(path)
    cli_requests, cli_summary = cli_run(cli, path, tmp_path / "out", sets)
    r = kvreplay.run(Trace.read(path), **sets)
    assert r.requests.num_rows == len(t) == cli_requests.num_rows
    # Same columns, types and values, bit for bit.
    assert r.requests.equals(cli_requests), (r.requests.schema, cli_requests.schema)
    assert r.summary == cli_summary["summary"]
    # The resolved configuration is the CLI's (less the trace's file name it adds).
    c = dict(cli_summary["config"])
    c.pop("trace", None)
    assert r.config == c


def test_compare_equals_the_cli(cli, tmp_path):
    t = small_doc_qa()
    path = tmp_path / "t.parquet"
    t.write(path)
    out = tmp_path / "cmp"
    # A GPU cache of 400 blocks (6,400 tokens) cannot keep the 12,000 tokens of documents.
    subprocess.run([cli, "compare", "--trace", str(path), "--variants", "none,cpu:4",
                    "--set", "num_gpu_blocks=400", "-o", str(out)],
                   check=True, capture_output=True)
    res = kvreplay.compare(t, ["none", "cpu:4"], num_gpu_blocks=400)
    assert list(res) == ["none", "cpu:4"]
    for label, r in res.items():
        d = out / label.replace(":", "_")
        assert r.label == label
        assert r.requests.equals(pq.read_table(d / "requests.parquet"))
        assert r.summary == json.loads((d / "summary.json").read_text())["summary"]
    # The CPU tier turns the query round into hits; vLLM alone has none beyond the GPU's.
    assert res["cpu:4"].summary["hit_fractions"]["cpu"] > 0
    assert res["none"].summary["hit_fractions"]["cpu"] == 0


# --- hand-computed mechanisms through the Python API ---------------------------------------

def test_shared_prefix_hits_by_hand():
    t = Trace.from_arrow(shared_prefix_table())
    # vLLM's prefix cache: the shared 1,000 tokens in whole 16-token blocks = 992 tokens for
    # each later request; the first finds nothing.
    r = kvreplay.run(t).requests.to_pydict()
    assert r["tokens_gpu"] == [0, 992, 992]
    assert r["tokens_computed"] == [1200, 208, 208]
    # LMCache alone (no GPU prefix cache), chunks of 256: three whole chunks = 768 tokens.
    r = kvreplay.run(t, tier="cpu", chunk_size=256, enable_prefix_caching=False).requests
    assert r["tokens_cpu"].to_pylist() == [0, 768, 768]
    assert r["tokens_gpu"].to_pylist() == [0, 0, 0]


def test_sweep_points_are_runs():
    t = small_doc_qa()
    pts = kvreplay.sweep(t, {"tier": ["none", "cpu"], "chunk_size": [256, 512]},
                         max_local_cpu_size=4)
    assert pts.num_rows == 4
    rows = pts.to_pylist()
    assert sorted((r["tier"], r["chunk_size"]) for r in rows) == [
        ("cpu", 256.0), ("cpu", 512.0), ("none", 256.0), ("none", 512.0)]
    for row in rows:
        one = kvreplay.run(t, tier=row["tier"], chunk_size=int(row["chunk_size"]),
                           max_local_cpu_size=4).requests
        ttft = [x for x in one["ttft_s"].to_pylist() if x is not None]
        assert row["completed"] == len(ttft) == len(t)
        assert row["ttft_mean_s"] == pytest.approx(sum(ttft) / len(ttft), rel=1e-12)


def test_plan_rate_answer_is_the_largest_passing_probe():
    t = kvreplay.gen.random(num_prompts=40, random_input_len=2048, random_output_len=32,
                            request_rate=4.0)
    p = kvreplay.plan.rate(t, ["ttft_p99=0.2s"])
    ok = [e["x"] for e in p["evidence"] if e["ok"]]
    fail = [e["x"] for e in p["evidence"] if not e["ok"]]
    assert ok and fail, p  # bracketed: some rate meets the SLO, a higher one does not
    assert max(ok) < min(fail)
    # The answer in req/s is the best passing factor times the trace's own rate (requests over
    # the span of arrivals).
    arr = t.to_arrow()["arrival_ns"].to_pylist()
    rate = len(arr) / ((max(arr) - min(arr)) / 1e9)
    assert p["answer"] == pytest.approx(max(ok) * rate, rel=1e-12)
    for e in p["evidence"]:
        assert e["ok"] == (e["metrics"]["ttft_p99_s"] <= 0.2)


def test_plan_tier_size_is_minimal():
    t = small_doc_qa(num_documents=8)
    p = kvreplay.plan.tier_size(t, "hit_rate_total=0.45", resolution_gib=1.0)
    size = p["answer"]
    assert size is not None
    at = lambda gib: kvreplay.run(t, tier="cpu", max_local_cpu_size=gib).summary
    total = lambda s: sum(s["hit_fractions"].values())
    assert total(at(size)) >= 0.45
    if size > 1.0:
        assert total(at(size - 1.0)) < 0.45


# --- traces in and out -------------------------------------------------------------------

def test_arrow_and_pandas_round_trips(tmp_path):
    t = small_doc_qa()
    a = tmp_path / "a.jsonl"
    t.write(a)
    for back in (Trace.from_arrow(t.to_arrow()), Trace.from_pandas(t.to_pandas())):
        b = tmp_path / "b.jsonl"
        back.write(b)
        assert b.read_bytes() == a.read_bytes()
        assert back.header == t.header


def test_generators_are_deterministic():
    p = dict(num_prompts=20, random_input_len=256, random_output_len=16, request_rate=2.0)
    a, b = kvreplay.gen.random(seed=1, **p), kvreplay.gen.random(seed=1, **p)
    c = kvreplay.gen.random(seed=2, **p)
    assert a.to_arrow().equals(b.to_arrow())
    assert not a.to_arrow().equals(c.to_arrow())
    assert len(a) == 20


def test_minimal_table_gets_defaults():
    t = Trace.from_arrow(shared_prefix_table(n=2))
    tbl = t.to_arrow()
    assert tbl["round"].to_pylist() == [0, 0]
    assert tbl["session"].null_count == 2
    assert tbl["output_content"].to_pylist() == [kvreplay._native.output_content(i) for i in (0, 1)]
    assert t.header["source"] == "python"


# --- errors name file, line and field ----------------------------------------------------

def test_bad_trace_line_names_file_line_field(tmp_path):
    p = tmp_path / "bad.jsonl"
    small_doc_qa().write(p)
    lines = p.read_text().splitlines()
    lines[3] = lines[3].replace('"input_len":', '"input_len":-', 1)
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(KvreplayError) as e:
        Trace.read(p)
    assert re.match(rf"{re.escape(str(p))}:4: input_len: ", str(e.value)), str(e.value)


def test_unknown_key_is_named():
    with pytest.raises(KvreplayError, match="tierr.*tier"):
        kvreplay.run(small_doc_qa(), tierr="cpu")
    with pytest.raises(KvreplayError, match="chunk_size"):
        kvreplay.run(small_doc_qa(), chunk_size="big")


def test_bad_table_names_row_and_column():
    tbl = shared_prefix_table()
    with pytest.raises(KvreplayError, match="arrival_ns"):
        Trace.from_arrow(tbl.set_column(1, "arrival_ns", pa.array([0, -1, 2])))
    with pytest.raises(KvreplayError, match="missing column.*prompt_len|prompt_len.*missing"):
        Trace.from_arrow(tbl.drop_columns(["prompt_len"]))
    # A prompt whose runs do not add up to its input length: row 2 (1-based), input_len.
    bad = tbl.set_column(2, "input_len", pa.array([1200, 1199, 1200], pa.uint32()))
    with pytest.raises(KvreplayError, match=r"arrow table:2: prompt: runs hold 1200 tokens but input_len is 1199"):
        Trace.from_arrow(bad)


def test_import_counts_reconcile(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text("\n".join([
        json.dumps({"timestamp": 0.0, "prompt_token_ids": [1, 2, 3, 4], "output_len": 2}),
        "{not json",
        json.dumps({"timestamp": 1.0, "prompt_token_ids": [1, 2, 3, 5], "output_len": 2}),
        json.dumps({"timestamp": 2.0, "prompt_token_ids": "x", "output_len": 2}),
    ]) + "\n")
    t = Trace.import_file(p, "token-ids")
    rep = t.import_report
    assert (rep["read"], rep["imported"]) == (4, 2)
    assert sum(rep["skipped"].values()) == 2
    assert len(t) == 2
    with pytest.raises(KvreplayError, match=rf"{re.escape(str(p))}:2: "):
        Trace.import_file(p, "token-ids", strict=True)
    with pytest.raises(KvreplayError, match="unknown import format"):
        Trace.import_file(p, "nope")


def test_the_readme_example_runs(tmp_path, monkeypatch):
    """README's Python example, as written (its trace reading alternatives are comments), in a
    scratch folder (it writes a timeline)."""
    import pathlib

    monkeypatch.chdir(tmp_path)

    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Python\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    # 20 documents: a warmup round, then the query round repeating each twice (repeat_count 2).
    assert scope["r"].requests.num_rows == 20 + 2 * 20
    assert list(scope["variants"]) == ["none", "cpu:30", "remote:20ms"]
    assert scope["points"].num_rows == 4
    assert json.loads((tmp_path / "run.json").read_text())["traceEvents"]


def test_timeline_equals_the_clis(cli, tmp_path):
    t = small_doc_qa()
    path = tmp_path / "t.jsonl"
    t.write(path)
    sets = {"tier": "cpu", "max_local_cpu_size": 4}
    args = [cli, "run", "--trace", str(path), "-o", str(tmp_path / "out"),
            "--timeline", str(tmp_path / "cli.json")]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    subprocess.run(args, check=True, capture_output=True)
    r = kvreplay.run(t, timeline=tmp_path / "py.json", **sets)
    assert (tmp_path / "py.json").read_bytes() == (tmp_path / "cli.json").read_bytes()
    doc = json.loads((tmp_path / "py.json").read_text())
    assert len(doc["traceEvents"]) == r.timeline["events"]
    assert r.timeline["dropped_steps"] == 0
    assert r.timeline["sampled_requests"] == len(t)
    # Recording changes nothing in the results.
    plain = kvreplay.run(t, **sets)
    assert plain.timeline is None
    assert r.requests.equals(plain.requests) and r.summary == plain.summary

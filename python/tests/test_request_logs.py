"""Request logs with text, imported through the Python API with a tokenizer trained here by the
`tokenizers` package (as the live check trains its own): token counts must equal what Python's
`tokenizers` and Jinja2 (what Hugging Face's apply_chat_template uses) give for the same
template, and prefix hits must follow from the shared tokens exactly."""

import json
import random

import pytest

import kvreplay
from kvreplay import KvreplayError, Trace

tokenizers = pytest.importorskip("tokenizers")
jinja2 = pytest.importorskip("jinja2")
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"
    "<|{{ m['role'] }}|>\n{{ m['content'] | trim }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
WORDS = ("cache tier prefix token block chunk remote store engine request latency "
         "throughput schedule decode prefill offload memory bandwidth router replica").split()


def text(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A byte-level BPE trained on a small corpus, and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    d = tmp_path_factory.mktemp("model")
    rng = random.Random(7)
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(text(rng, 40) for _ in range(300)))
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train([str(corpus)], trainer)
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "chat_template": TEMPLATE}))
    return d


def python_tokens(model_dir, messages):
    """What Hugging Face would send vLLM: the template rendered by Jinja2, encoded without
    special tokens (the template holds them)."""
    from tokenizers import Tokenizer

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(msg):
        raise ValueError(msg)

    env.globals["raise_exception"] = raise_exception
    rendered = env.from_string(TEMPLATE).render(
        messages=messages, bos_token="<s>", eos_token="</s>", add_generation_prompt=True)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    return tok.encode(rendered, add_special_tokens=False).ids


def test_openai_log_tokens_and_hits_match_python(model_dir, tmp_path):
    rng = random.Random(1)
    system = text(rng, 700)
    logs = []
    for i in range(3):
        logs.append({"timestamp": 10.0 * i, "body": {
            "model": "m", "max_tokens": 1,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": text(rng, 30 + i)}]}})
    log = tmp_path / "requests.jsonl"
    log.write_text("".join(json.dumps(x) + "\n" for x in logs))
    t = Trace.import_file(log, "openai", tokenizer=model_dir)
    assert t.import_report["read"] == t.import_report["imported"] == 3

    ids = [python_tokens(model_dir, x["body"]["messages"]) for x in logs]
    assert t.to_arrow()["input_len"].to_pylist() == [len(x) for x in ids]
    # The tokens the three prompts share, by Python's own tokenization.
    shared = 0
    while all(len(x) > shared for x in ids) and len({x[shared] for x in ids}) == 1:
        shared += 1
    assert shared > 512, shared  # the system prompt is long enough for whole chunks

    r = kvreplay.run(t).requests
    assert r["tokens_gpu"].to_pylist() == [0] + [shared // 16 * 16] * 2
    r = kvreplay.run(t, tier="cpu", chunk_size=256, enable_prefix_caching=False).requests
    assert r["tokens_cpu"].to_pylist() == [0] + [shared // 256 * 256] * 2


def test_unknown_role_is_one_error_naming_the_line(model_dir, tmp_path):
    log = tmp_path / "bad.jsonl"
    ok = {"timestamp": 0, "messages": [{"role": "user", "content": "cache"}], "max_tokens": 4}
    bad = {"timestamp": 1, "messages": [{"role": "wizard", "content": "cache"}],
           "max_tokens": 4}
    log.write_text(json.dumps(ok) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(KvreplayError, match=rf"^{str(log)}:2: messages\[0\]\.role: "):
        Trace.import_file(log, "openai", tokenizer=model_dir, strict=True)
    t = Trace.import_file(log, "openai", tokenizer=model_dir)
    rep = t.import_report
    assert (rep["read"], rep["imported"], sum(rep["skipped"].values())) == (2, 1, 1)


def test_sharegpt_turns_are_sessions(model_dir, tmp_path):
    convs = [{"id": "a", "conversations": [
        {"from": "human", "value": "cache tier"}, {"from": "gpt", "value": "prefix token block"},
        {"from": "human", "value": "chunk remote"}, {"from": "gpt", "value": "store"}]}]
    p = tmp_path / "sharegpt.json"
    p.write_text(json.dumps(convs))
    t = Trace.import_file(p, "sharegpt", tokenizer=model_dir, clients=1)
    tbl = t.to_arrow().to_pylist()
    assert len(tbl) == 2 and tbl[0]["session"] == tbl[1]["session"]
    first = python_tokens(model_dir, [{"role": "user", "content": "cache tier"}])
    second = python_tokens(model_dir, [
        {"role": "user", "content": "cache tier"},
        {"role": "assistant", "content": "prefix token block"},
        {"role": "user", "content": "chunk remote"}])
    assert [r["input_len"] for r in tbl] == [len(first), len(second)]


TOOLS_TEMPLATE = (
    "{{ bos_token }}{% if tools %}<|tools|>\n{{ tools | tojson(indent=2) }}\n"
    "{% for t in tools %}{{ t | tojson }}\n{% endfor %}{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}"
    "<call>{{ c.function.name }} {{ c.function.arguments }}</call>{% endfor %}{% endif %}"
    "{% if m.tool_call_id %} [{{ m.tool_call_id }}]{% endif %}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def test_tools_and_tool_calls_count_as_python_renders_them(model_dir, tmp_path):
    import shutil

    d = tmp_path / "tools-model"
    d.mkdir()
    shutil.copy(model_dir / "tokenizer.json", d / "tokenizer.json")
    (d / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "chat_template": TOOLS_TEMPLATE}))
    # Keys in sorted order at every level: the importer reads a request's objects with their
    # keys sorted (README, "Request logs in text"), Python keeps them as written.
    tools = [{"function": {"description": "the cache tier of a prefix", "name": "lookup",
                           "parameters": {"properties": {"prefix": {"type": "string"}},
                                          "type": "object"}},
              "type": "function"}]
    messages = [
        {"role": "user", "content": "which tier holds the prefix"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"function": {"arguments": "{\"prefix\": \"cache token\"}", "name": "lookup"},
             "id": "call_1", "type": "function"}]},
        {"role": "tool", "content": "remote store", "tool_call_id": "call_1"},
    ]
    log = tmp_path / "tools.jsonl"
    log.write_text(json.dumps({"timestamp": 0, "max_tokens": 8, "tools": tools,
                               "messages": messages}) + "\n")
    t = Trace.import_file(log, "openai", tokenizer=d)

    from tokenizers import Tokenizer

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    # transformers' tojson for chat templates.
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, \
        sort_keys=False: json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                                    separators=separators, sort_keys=sort_keys)
    py_messages = [dict(m, content=m["content"] or "") for m in messages]
    rendered = env.from_string(TOOLS_TEMPLATE).render(
        messages=py_messages, tools=tools, bos_token="<s>", eos_token="</s>",
        add_generation_prompt=True)
    assert "[call_1]" in rendered and '"prefix": {' in rendered
    ids = Tokenizer.from_file(str(d / "tokenizer.json")).encode(rendered, add_special_tokens=False)
    assert t.to_arrow()["input_len"].to_pylist() == [len(ids.ids)]

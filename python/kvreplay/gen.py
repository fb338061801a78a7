"""Workload generators, the same as ``kvreplay trace gen`` and studies' workloads: the same
parameters and seed always give the same trace.

Parameters are the generator's own (as in a study file's ``workload``); an unknown one raises
:class:`kvreplay.KvreplayError` listing the known ones.
"""

from __future__ import annotations

from typing import Any

from . import Trace, _native

__all__ = ["generate", "llmperf", "long_doc_qa", "multi_turn", "random", "single_prompt_twice"]

# The CLI's generator names and their study kinds.
_KINDS = {
    "llmperf": "llmperf",
    "long_doc_qa": "long_doc_qa",
    "long-doc-qa": "long_doc_qa",
    "multi_turn": "vllm_multi_turn",
    "multi-turn": "vllm_multi_turn",
    "vllm_multi_turn": "vllm_multi_turn",
    "random": "vllm_bench_random",
    "vllm_bench_random": "vllm_bench_random",
    "single_prompt_twice": "single_prompt_twice",
}


def generate(kind: str, seed: int = 0, **params: Any) -> Trace:
    """The workload ``kind`` (``llmperf``, ``long_doc_qa``, ``multi_turn``, ``random``,
    ``single_prompt_twice``) with ``params``."""
    k = _KINDS.get(kind, kind)
    return Trace(_native.generate(k, params, seed))


def llmperf(seed: int = 0, **params: Any) -> Trace:
    """ray-project/llmperf: normal input and output lengths, unique prompts, N clients
    (``mean_input_tokens``, ``stddev_input_tokens``, ``mean_output_tokens``,
    ``num_concurrent_requests``, ``max_num_completed_requests``, ...)."""
    return generate("llmperf", seed, **params)


def long_doc_qa(seed: int = 0, **params: Any) -> Trace:
    """LMCache long_doc_qa: a warmup round over ``num_documents`` documents of
    ``document_length`` tokens, then a query round (``repeat_count``, ``repeat_mode``,
    ``max_inflight_requests``, ``output_len``, ...)."""
    return generate("long_doc_qa", seed, **params)


def multi_turn(seed: int = 0, **params: Any) -> Trace:
    """vLLM benchmarks/multi_turn: conversations from a ``generate_conversations`` config
    (``config``: a path or the config as a dict, ``num_clients``, ...)."""
    return generate("multi_turn", seed, **params)


def random(seed: int = 0, **params: Any) -> Trace:
    """``vllm bench serve --dataset-name random``: random lengths, an optional shared prefix,
    Poisson or gamma arrivals (``num_prompts``, ``random_input_len``,
    ``random_output_len``, ``random_prefix_len``, ``random_range_ratio``, ``request_rate``,
    ``burstiness``, ``max_concurrency``)."""
    return generate("random", seed, **params)


def single_prompt_twice(seed: int = 0, **params: Any) -> Trace:
    """One prompt sent twice (the second is a prefix-cache hit)."""
    return generate("single_prompt_twice", seed, **params)

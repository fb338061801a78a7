"""kvreplay: replay LLM serving traffic through a deterministic model of vLLM V1 with LMCache or
vLLM's native KV offload, from Python.

The same simulator as the ``kvreplay`` command line: the same configuration keys (``kvreplay
keys``, or :func:`keys`), the same results. Tables are pyarrow Tables handed over through
Arrow's C stream interface (no copy through Python objects); summaries, configurations and plans
are plain dicts.

Example::

    import kvreplay
    trace = kvreplay.gen.long_doc_qa(num_documents=8, document_length=5000, seed=0)
    r = kvreplay.run(trace, tier="cpu", max_local_cpu_size=8)
    r.requests.to_pandas()["ttft_s"].describe()
    r.summary["ttft"]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import pyarrow as pa

from . import _native
from ._native import KvreplayError

__version__: str = _native.__version__

__all__ = [
    "KvreplayError",
    "Trace",
    "RunResult",
    "run",
    "compare",
    "sweep",
    "keys",
    "gen",
    "plan",
    "TraceLike",
]


class Trace:
    """A workload: requests with arrival times, lengths and prompt content identities.

    Build one with :meth:`read` (a ``.jsonl`` or ``.parquet`` trace file), :meth:`import_file`
    (a public trace format or a request log), :mod:`kvreplay.gen` (the generators),
    :meth:`from_arrow` or :meth:`from_pandas`; look at it with :meth:`to_arrow` or
    :meth:`to_pandas`. The table's columns are those of the Parquet trace format (README,
    "The canonical trace"): ``prompt_content``, ``prompt_offset`` and ``prompt_len`` are parallel
    lists, one element per prompt run.
    """

    __slots__ = ("_native", "_report")

    def __init__(
        self, native: "_native.NativeTrace", report: Optional[Dict[str, Any]] = None
    ) -> None:
        self._native = native
        self._report = report

    @classmethod
    def read(cls, path: Union[str, "os.PathLike[str]"]) -> "Trace":
        """Reads a canonical trace file (``.jsonl`` or ``.parquet``)."""
        return cls(_native.read_trace(os.fspath(path)))

    @classmethod
    def import_file(
        cls,
        path: Union[str, "os.PathLike[str]"],
        format: str,
        *,
        strict: bool = False,
        block_size: Optional[int] = None,
        clients: Optional[int] = None,
        tokenizer: Optional[Union[str, "os.PathLike[str]"]] = None,
        think_time: float = 0.0,
    ) -> "Trace":
        """Imports a file in one of ``kvreplay trace import``'s formats (``mooncake``,
        ``azure``, ``burstgpt``, ``bailian``, ``vllm-bench``, ``llmperf``, ``token-ids``,
        ``openai``, ``sharegpt``).

        Request logs with text (``openai``, ``sharegpt``) need ``tokenizer``: the model's folder
        with ``tokenizer.json`` and ``tokenizer_config.json`` (its chat template); prompts are
        tokenized exactly, so shared prefixes are shared content. ``clients`` and
        ``think_time`` (seconds between a conversation's turns) set ShareGPT's closed loop.

        Malformed records are skipped with a reason (or raise with ``strict=True``); what
        happened to each record is in the trace's ``import_report`` (read = imported + skipped).
        """
        tok = None if tokenizer is None else os.fspath(tokenizer)
        native, report = _native.import_trace(
            format, os.fspath(path), strict, block_size, clients, tok, think_time
        )
        return cls(native, report)

    @property
    def import_report(self) -> Optional[Dict[str, Any]]:
        """For an imported trace: records ``read``, ``imported``, ``skipped`` by reason and the
        first few errors in full (``examples``); ``None`` otherwise."""
        return self._report

    @classmethod
    def from_arrow(cls, table: Any, header: Optional[Mapping[str, Any]] = None) -> "Trace":
        """A trace from an Arrow table (pyarrow, polars, DuckDB: anything with
        ``__arrow_c_stream__``) in the canonical columns.

        Integer columns are cast to the canonical types; optional columns may be left out
        (``session``, ``pool``, ``measured_*``: null; ``round``, ``think_ns``: 0;
        ``output_content``: the request's own). The header (source, pools) comes from the
        table's ``kvreplay.trace`` schema metadata, else ``header``, else an open-loop header
        with source ``"python"``. The result is checked as a trace file is: an error names the
        row and the column.
        """
        t = table if isinstance(table, pa.Table) else pa.table(table)
        meta = t.schema.metadata or {}
        header_json = None
        if b"kvreplay.trace" not in meta:
            header_json = json.dumps(
                dict(header) if header is not None else {"format_version": 1, "source": "python"}
            )
        return cls(_native.trace_from_arrow(_canonical(t), header_json, "arrow table"))

    @classmethod
    def from_pandas(cls, df: Any, header: Optional[Mapping[str, Any]] = None) -> "Trace":
        """A trace from a pandas DataFrame in the canonical columns (as :meth:`to_pandas` gives;
        its header travels in ``df.attrs["kvreplay.trace"]``). See :meth:`from_arrow`."""
        t = pa.Table.from_pandas(df, preserve_index=False)
        attr = getattr(df, "attrs", {}).get("kvreplay.trace")
        if header is None and attr is not None:
            header = json.loads(attr)
        t = t.replace_schema_metadata(None)
        return cls.from_arrow(t, header)

    def to_arrow(self) -> pa.Table:
        """The requests as a pyarrow Table in the canonical columns; the header is the schema's
        ``kvreplay.trace`` metadata (JSON)."""
        return pa.table(self._native.to_arrow())

    def to_pandas(self) -> Any:
        """The requests as a pandas DataFrame; the header is in ``df.attrs["kvreplay.trace"]``."""
        df = _to_pandas(self.to_arrow())
        df.attrs["kvreplay.trace"] = self._native.header_json()
        return df

    @property
    def header(self) -> Dict[str, Any]:
        """Everything about the trace that is not a request: format version, source, pools,
        generator or importer parameters."""
        return json.loads(self._native.header_json())

    def write(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Writes the trace as ``.jsonl`` or ``.parquet`` (by extension), as the CLI does."""
        self._native.write(os.fspath(path))

    def __len__(self) -> int:
        return len(self._native)

    def __repr__(self) -> str:
        return f"Trace({len(self)} requests, source={self.header.get('source')!r})"


TraceLike = Union[Trace, str, "os.PathLike[str]", pa.Table, Any]
"""A :class:`Trace`, a trace file's path, an Arrow table or a pandas DataFrame."""


def _as_trace(trace: TraceLike) -> Trace:
    if isinstance(trace, Trace):
        return trace
    if isinstance(trace, (str, os.PathLike)):
        return Trace.read(trace)
    if isinstance(trace, pa.Table) or hasattr(trace, "__arrow_c_stream__"):
        return Trace.from_arrow(trace)
    if type(trace).__name__ == "DataFrame" and hasattr(trace, "attrs"):
        return Trace.from_pandas(trace)
    raise TypeError(f"expected a Trace, a path, an Arrow table or a DataFrame, not {type(trace).__name__}")


def _to_pandas(t: pa.Table) -> Any:
    """``t`` in pandas with integers exact: nullable integer columns become pandas' nullable
    integer types rather than float64 (which would round ids above 2**53)."""
    import pandas as pd

    ints = {
        pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
        pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(),
        pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(),
        pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
    }
    return t.to_pandas(types_mapper=ints.get)


_SCHEMA: Optional[pa.Schema] = None

# Optional columns and how to fill them when a table leaves them out.
_FILL = {"session", "pool", "round", "think_ns", "output_content", "measured_ttft_ns",
         "measured_e2e_ns", "measured_itl_mean_ns", "measured_itl_ns", "measured_error"}


def _schema() -> pa.Schema:
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = pa.table(_native.trace_schema()).schema.remove_metadata()
    return _SCHEMA


def _canonical(t: pa.Table) -> pa.Table:
    """``t`` with the canonical columns, in order, of the canonical types."""
    schema = _schema()
    n = t.num_rows
    cols = []
    for field in schema:
        if field.name in t.column_names:
            try:
                cols.append(t[field.name].cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise KvreplayError(f"arrow table: {field.name}: cannot be read as {field.type}: {e}") from None
        elif field.name not in _FILL:
            raise KvreplayError(f"arrow table: {field.name}: missing column (required)")
        elif field.name in ("round", "think_ns"):
            cols.append(pa.array([0] * n, field.type))
        elif field.name == "output_content":
            ids = t["id"].cast(pa.uint64()).to_pylist() if "id" in t.column_names else []
            cols.append(pa.array([_native.output_content(i) for i in ids], field.type))
        elif field.name == "measured_itl_ns":
            cols.append(pa.array([[] for _ in range(n)], field.type))
        else:
            cols.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(cols, schema=schema.with_metadata(t.schema.metadata or {}))


@dataclass(frozen=True)
class RunResult:
    """One simulated configuration.

    ``requests``: one row per request (the columns of ``requests.parquet``: times in seconds,
    tokens served by each tier, bytes moved); ``summary``: the aggregates of ``summary.json``;
    ``config``: the resolved configuration with the provenance of its inputs; ``label``: the
    variant's name in :func:`compare`; ``timeline``: with :func:`run`'s ``timeline=``, what the
    file holds (``events``, ``limit_per_replica``, ``dropped_steps``, ``dropped_transfers``,
    ``sampled_requests``).
    """

    requests: pa.Table
    summary: Dict[str, Any]
    config: Dict[str, Any]
    label: Optional[str] = None
    timeline: Optional[Dict[str, Any]] = None

    def to_pandas(self) -> Any:
        """The per-request table as a pandas DataFrame."""
        return _to_pandas(self.requests)


def _keys(config: Optional[Mapping[str, Any]], kw: Mapping[str, Any]) -> Dict[str, Any]:
    merged: Dict[str, Any] = dict(config or {})
    merged.update(kw)
    return merged


def run(
    trace: TraceLike,
    config: Optional[Mapping[str, Any]] = None,
    *,
    timeline: Optional[Union[str, "os.PathLike[str]"]] = None,
    **keys: Any,
) -> RunResult:
    """Simulates ``trace`` under the default configuration with ``config`` and ``keys``
    applied, as ``kvreplay run --set KEY=VALUE`` would (``model``, ``gpu``, ``tier``,
    ``max_local_cpu_size``, ``chunk_size``, ``rtt_ms``, ...; see :func:`keys`).

    ``timeline``: also write the run as a Chrome / Perfetto trace-event JSON file there (open
    it in https://ui.perfetto.dev): a track per engine (steps and their lookup / load / forward
    / store parts), loads and stores by tier, bandwidth and KV-usage counters and the first 200
    requests' phases, at most 100,000 step and transfer records per run (what was dropped past
    that is in ``RunResult.timeline``).
    Raises :class:`KvreplayError` for an unknown key or a bad value, naming it.
    """
    t = _as_trace(trace)
    path = None if timeline is None else os.fspath(timeline)
    (requests, summary, cfg), info = _native.run(t._native, _keys(config, keys), path)
    return RunResult(pa.table(requests), summary, cfg, timeline=info)


def compare(
    trace: Optional[TraceLike] = None,
    variants: Optional[Union[str, Sequence[str]]] = None,
    config: Optional[Mapping[str, Any]] = None,
    **keys: Any,
) -> Dict[str, RunResult]:
    """One trace under several offload configurations, as ``kvreplay compare``: variants like
    ``"none"``, ``"cpu:66"``, ``"disk:100"``, ``"remote:20"``, ``"native:66"`` (a list or a
    comma-separated string; default: the CLI's list). With no trace, the embedded default
    workload (LMCache's long_doc_qa) and its base configuration. Results by variant label, in
    variant order.
    """
    t = None if trace is None else _as_trace(trace)._native
    v = variants if variants is None or isinstance(variants, str) else ",".join(variants)
    out: Dict[str, RunResult] = {}
    for label, requests, summary, cfg in _native.compare(t, v, _keys(config, keys)):
        out[label] = RunResult(pa.table(requests), summary, cfg, label)
    return out


def sweep(
    trace: TraceLike,
    grid: Mapping[str, Sequence[Any]],
    config: Optional[Mapping[str, Any]] = None,
    **keys: Any,
) -> pa.Table:
    """Every combination of ``grid``'s values (key -> list of values) over the base
    configuration, in parallel: one row per point with the grid keys, the aggregate metrics
    (``ttft_p99_s``, ``output_tps``, ``hit_rate_total``, ...) and ``params`` (the point as JSON),
    as ``kvreplay sweep``'s ``points.parquet``."""
    t = _as_trace(trace)
    g = {k: list(v) if isinstance(v, (list, tuple, range)) else [v] for k, v in grid.items()}
    return pa.table(_native.sweep(t._native, g, _keys(config, keys)))


def keys() -> str:
    """Every configuration key with its meaning and default (``kvreplay keys``)."""
    return _native.keys_help()


from . import gen, plan  # noqa: E402  (they use the names above)

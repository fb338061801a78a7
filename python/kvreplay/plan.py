"""Searches over configurations, as ``kvreplay plan``: each returns the answer and its evidence
as a dict: ``question``, ``answer`` (``None`` when no searched point met the targets),
``answer_text`` and ``evidence`` (every point evaluated, in search order, with its metrics and
whether every target held).

Targets are written as on the command line: ``"ttft_p99=2s"``, ``"tpot_p99=50ms"``,
``"hit_rate_total=0.8"``.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Union

from . import TraceLike, _as_trace, _keys, _native

__all__ = ["rate", "tier_size", "chunk", "fleet"]


def _list(x: Union[str, Sequence[str]]) -> list:
    return [x] if isinstance(x, str) else list(x)


def rate(
    trace: TraceLike,
    slo: Union[str, Sequence[str]],
    config: Optional[Mapping[str, Any]] = None,
    **keys: Any,
) -> Dict[str, Any]:
    """The highest arrival-rate factor (``qps_scale``) at which every SLO holds."""
    t = _as_trace(trace)
    return _native.plan_rate(t._native, _list(slo), _keys(config, keys))


def tier_size(
    trace: TraceLike,
    target: Union[str, Sequence[str]],
    config: Optional[Mapping[str, Any]] = None,
    *,
    disk: bool = False,
    resolution_gib: float = 1.0,
    **keys: Any,
) -> Dict[str, Any]:
    """The smallest LMCache CPU tier (or disk tier, ``disk=True``) in GiB reaching every
    target, to ``resolution_gib``."""
    t = _as_trace(trace)
    return _native.plan_tier_size(
        t._native, _list(target), disk, resolution_gib, _keys(config, keys)
    )


def chunk(
    trace: TraceLike,
    at_rtt_ms: float,
    candidates: Sequence[int] = (64, 128, 256, 512, 1024),
    metric: str = "ttft_mean_s",
    config: Optional[Mapping[str, Any]] = None,
    **keys: Any,
) -> Dict[str, Any]:
    """The chunk size among ``candidates`` minimising ``metric`` with a remote store
    ``at_rtt_ms`` away."""
    t = _as_trace(trace)
    return _native.plan_chunk(
        t._native, float(at_rtt_ms), list(candidates), metric, _keys(config, keys)
    )


def fleet(
    trace: TraceLike,
    slo: Union[str, Sequence[str]],
    config: Optional[Mapping[str, Any]] = None,
    *,
    max_replicas: int = 256,
    **keys: Any,
) -> Dict[str, Any]:
    """The fewest replicas behind the configured router (``router`` key) meeting every SLO at
    the trace's rate."""
    t = _as_trace(trace)
    return _native.plan_fleet(t._native, _list(slo), max_replicas, _keys(config, keys))

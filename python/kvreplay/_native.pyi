"""Type stubs of the Rust extension ``kvreplay._native`` (use the ``kvreplay`` package's API)."""

from typing import Any, Dict, List, Optional, Tuple

__version__: str

class KvreplayError(ValueError):
    """Bad input or configuration; the message names the file, line and field at fault."""

class ArrowTable:
    """Record batches built in Rust, handed over once through ``__arrow_c_stream__``."""
    def __arrow_c_stream__(self, requested_schema: Optional[object] = None) -> object: ...

class NativeTrace:
    """A workload held by Rust."""
    def __len__(self) -> int: ...
    def header_json(self) -> str: ...
    def to_arrow(self) -> ArrowTable: ...
    def write(self, path: str) -> None: ...

def read_trace(path: str) -> NativeTrace: ...
def trace_from_arrow(
    stream: object, header_json: Optional[str] = None, name: str = "arrow table"
) -> NativeTrace: ...
def trace_schema() -> ArrowTable: ...
def output_content(id: int) -> int: ...
def generate(kind: str, params: Dict[str, Any], seed: int) -> NativeTrace: ...
def import_trace(
    format: str,
    path: str,
    strict: bool = False,
    block_size: Optional[int] = None,
    clients: Optional[int] = None,
    tokenizer: Optional[str] = None,
    think_time: float = 0.0,
) -> Tuple[NativeTrace, Dict[str, Any]]: ...
def run(
    trace: NativeTrace, config: Dict[str, Any], timeline: Optional[str] = None
) -> Tuple[Tuple[ArrowTable, Dict[str, Any], Dict[str, Any]], Optional[Dict[str, Any]]]: ...
def compare(
    trace: Optional[NativeTrace], variants: Optional[str], config: Dict[str, Any]
) -> List[Tuple[str, ArrowTable, Dict[str, Any], Dict[str, Any]]]: ...
def sweep(
    trace: NativeTrace, grid: Dict[str, List[Any]], config: Dict[str, Any]
) -> ArrowTable: ...
def plan_rate(trace: NativeTrace, slos: List[str], config: Dict[str, Any]) -> Dict[str, Any]: ...
def plan_tier_size(
    trace: NativeTrace,
    targets_: List[str],
    disk: bool,
    resolution_gib: float,
    config: Dict[str, Any],
) -> Dict[str, Any]: ...
def plan_chunk(
    trace: NativeTrace,
    rtt_ms: float,
    candidates: List[int],
    metric: str,
    config: Dict[str, Any],
) -> Dict[str, Any]: ...
def plan_fleet(
    trace: NativeTrace, slos: List[str], max_replicas: int, config: Dict[str, Any]
) -> Dict[str, Any]: ...
def keys_help() -> str: ...

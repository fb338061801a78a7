"""Shared fixtures: the CLI binary the Python results are compared with."""

import os
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cli() -> str:
    """The ``kvreplay`` binary: ``$KVREPLAY_BIN``, else one built under ``target/``. Under CI a
    missing binary fails the test rather than skipping it."""
    env = os.environ.get("KVREPLAY_BIN")
    candidates = [env] if env else [
        str(ROOT / "target" / "debug" / "kvreplay"),
        str(ROOT / "target" / "release" / "kvreplay"),
        shutil.which("kvreplay") or "",
    ]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    if os.environ.get("CI"):
        pytest.fail("no kvreplay binary (set KVREPLAY_BIN or build it with cargo build)")
    pytest.skip("no kvreplay binary built")

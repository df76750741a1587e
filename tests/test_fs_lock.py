"""Ownership of a data directory: one process per runtime directory, a stable runtime id."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from worker_runtime.clock import new_id
from worker_runtime.errors import ConfigError
from worker_runtime.stores.fs import FsStore

from .support.fs_support import RUNTIME_ID, child, open_runtime, runtime_dir
from .support.server import serve

_OPEN_SAME_DIR = """
import sys
from worker_runtime.clock import new_id
from worker_runtime.errors import ConfigError
from worker_runtime.stores.fs import FsStore

try:
    FsStore.open(sys.argv[1], "rt-fs", new_id)
except ConfigError as exc:
    print(exc.code, exc.message, flush=True)
    sys.exit(3)
print("opened", flush=True)
"""


def test_a_second_process_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    with open_runtime(tmp_path), child(_OPEN_SAME_DIR, str(tmp_path)) as process:
        out, err = process.communicate(timeout=30)
        assert process.returncode == 3, err
        assert out.startswith("invalid_config ")
        assert str(runtime_dir(tmp_path)) in out
        assert f"in use by another process (pid {os.getpid()})" in out
    # Once the owner has closed, the directory can be opened again.
    with child(_OPEN_SAME_DIR, str(tmp_path)) as process:
        out, _ = process.communicate(timeout=30)
        assert (process.returncode, out.strip()) == (0, "opened")


def test_a_second_server_on_the_same_directory_fails_at_start(tmp_path: Path) -> None:
    env = {"WORKER_RUNTIME_STORE": "fs", "WORKER_RUNTIME_DATA_DIR": str(tmp_path)}
    with serve(env) as first:
        assert first.request("GET", "/v1/runtime").status == 200
        with pytest.raises(RuntimeError) as caught, serve(env, startup_timeout=20):
            pass
        assert "already in use by another process" in str(caught.value)
        assert str(tmp_path) in str(caught.value)


def test_a_second_open_in_the_same_process_is_refused(tmp_path: Path) -> None:
    store = FsStore.open(str(tmp_path), RUNTIME_ID, new_id)
    with pytest.raises(ConfigError):
        FsStore.open(str(tmp_path), RUNTIME_ID, new_id)
    # Another runtime id is another directory, with its own lock.
    FsStore.open(str(tmp_path), "rt-other", new_id).close()
    store.close()
    FsStore.open(str(tmp_path), RUNTIME_ID, new_id).close()


def test_a_damaged_default_runtime_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "default-runtime").write_text("../../etc\n")
    with pytest.raises(ConfigError) as caught:
        FsStore.open(str(tmp_path), None, new_id)
    assert "default-runtime" in caught.value.message
    assert not (tmp_path / "runtimes").exists()

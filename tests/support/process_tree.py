"""A tree of TERM-ignoring processes, for the tests that no engine process is left
behind (on cancel, with its runtime, after a crash and a restart)."""

from __future__ import annotations

from pathlib import Path

from worker_runtime.testing import wait_until

# ``tree.py DIR DEPTH [exit]`` ignores TERM (kept across fork and exec), starts
# ``tree.py DIR DEPTH-1`` (a fresh program, same env), announces itself as
# DIR/pid.<pid>, then sleeps; with ``exit``, the top one leaves once its child has
# announced itself.
TREE = r"""
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
where, depth = sys.argv[1], int(sys.argv[2])
if depth > 0:
    subprocess.Popen([sys.executable, __file__, where, str(depth - 1)])
name = os.path.join(where, f"pid.{os.getpid()}")
open(name + ".tmp", "w").close()
os.rename(name + ".tmp", name)
if sys.argv[3:] == ["exit"]:
    while len([f for f in os.listdir(where) if f.startswith("pid.")]) < 2:
        time.sleep(0.01)
    sys.exit(0)
while True:
    time.sleep(1)
"""


def announced(where: Path, count: int) -> list[int]:
    """Wait until ``count`` processes of the tree announced themselves; their pids."""
    wait_until(lambda: len(list(where.glob("pid.*[0-9]"))) >= count, what=f"{count} processes")
    return sorted(int(p.name.split(".")[1]) for p in where.glob("pid.*[0-9]"))

"""The console entry's fast exit: a library's idle pool threads never hold it up (a thread still
at work is waited for: tests/test_cli_speakers.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import threading, time
    from stream_spk.cli import main as entry

    # an idle non-daemon pool thread of a library (OpenVINO's import starts one), never done in time
    threading.Thread(target=time.sleep, args=(120,), name="ThreadPoolExecutor-0_0").start()
    entry.main = lambda: 0
    entry.run()
""")


def _run() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)


def test_library_pool_threads_do_not_delay_the_exit() -> None:
    proc = _run()  # would hang for 120 s if the exit joined the pool thread
    assert proc.returncode == 0, proc.stderr


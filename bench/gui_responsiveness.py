"""How long does the GUI event loop stall while the app replays a recording?

A 10 ms QTimer heartbeat runs next to the real main window while it replays a recording (real
model, worker thread, live redraws); the figure is the longest gap between two heartbeats minus
the 10 ms period. Also printed: gap percentiles, the GUI thread's own time per frame (drain +
redraw) and the replay's real-time factor.

    python bench/gui_responsiveness.py [RECORDING] [--speed 4] [--seconds S]

Default recording: /work/shared/data/dev/dev_vctk4.wav if present, else a mix of the test clips.
Runs offscreen unless a display is set (QT_QPA_PLATFORM=offscreen is the default here).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEV = Path("/work/shared/data/dev/dev_vctk4.wav")
HEARTBEAT_MS = 10


def _test_mix(folder: Path) -> Path:
    import soundfile as sf

    clips = [sf.read(p, dtype="float32")[0] for p in sorted((ROOT / "tests/data").glob("clip*_vctk_*.wav"))]
    gap = np.zeros(8000, np.float32)
    mix = np.concatenate([x for k in [2, 1, 3, 2, 1, 3, 0, 2] * 2 for x in (clips[k], gap)])
    path = folder / "mix.wav"
    sf.write(path, mix, 16000)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recording", nargs="?", help="audio file (default: dev_vctk4.wav)")
    parser.add_argument("--speed", type=float, default=4.0, help="replay speed (default: 4)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this much stream time")
    parser.add_argument("--max-wall", type=float, default=300.0,
                        help="stop the replay after this many wall seconds (default: %(default)s)")
    args = parser.parse_args()
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PyQt5.QtCore import QTimer
    from PyQt5.QtWidgets import QApplication

    from stream_spk.session import SessionOptions
    from stream_spk.ui.app import LaunchOptions, MainWindow

    tmp = tempfile.TemporaryDirectory()
    recording = Path(args.recording) if args.recording else (DEV if DEV.exists() else _test_mix(Path(tmp.name)))
    app = QApplication.instance() or QApplication(sys.argv[:1])
    options = SessionOptions(profiles=str(Path(tmp.name) / "profiles.sqlite3"))
    window = MainWindow(options, LaunchOptions(replay=recording, speed=args.speed))
    window.show()

    gaps: list[float] = []
    frames: list[float] = []
    last = [None]
    state = {"started": False}

    original_tick = window.tick

    def timed_tick() -> None:
        t0 = time.perf_counter()
        original_tick()
        if state["started"]:
            frames.append(time.perf_counter() - t0)

    window.frame_timer.timeout.disconnect()
    window.frame_timer.timeout.connect(timed_tick)

    def beat() -> None:
        now = time.perf_counter()
        if window.running and window.stream_now > 0:
            state["started"] = True
            if last[0] is not None:
                gaps.append(now - last[0])
        last[0] = now
        over_time = args.seconds is not None and window.stream_now >= args.seconds
        if window.running and (over_time or now - start_wall > args.max_wall):
            window.stop_session()

    load_before = os.getloadavg()[0]
    start_wall = time.perf_counter()
    heart = QTimer()
    heart.setInterval(HEARTBEAT_MS)
    heart.timeout.connect(beat)
    heart.start()
    window.bridge.sessionEnded.connect(lambda _msg: QTimer.singleShot(200, app.quit))
    app.exec_()
    wall = time.perf_counter() - start_wall
    heart.stop()
    window.close()
    if not gaps:
        print("no heartbeats recorded (did the replay start?)", window.last_error, file=sys.stderr)
        return 1
    g = (np.asarray(gaps) * 1000.0) - HEARTBEAT_MS
    f = np.asarray(frames) * 1000.0
    rtf = window.last_stats.real_time_factor if window.last_stats else float("nan")
    audio = window.last_session.audio_seconds if window.last_session else 0.0
    print(f"recording: {recording} ({audio:.1f} s at {args.speed:g}x, {wall:.1f} s wall, "
          f"platform {app.platformName()})")
    print(f"machine load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    print(f"heartbeats: {len(g)}; stall beyond {HEARTBEAT_MS} ms: p50 {np.percentile(g, 50):.1f} ms, "
          f"p99 {np.percentile(g, 99):.1f} ms, max {g.max():.1f} ms; {int((g > 50).sum())} over 50 ms")
    print(f"GUI frame (drain + redraw): mean {f.mean():.1f} ms, p99 {np.percentile(f, 99):.1f} ms, "
          f"max {f.max():.1f} ms over {len(f)} frames")
    print(f"pipeline real-time factor: {rtf:.3f}")
    print(f"LONGEST GUI STALL: {g.max():.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

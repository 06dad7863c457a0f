"""How long does the GUI event loop stall while the app replays a recording, and how fast is a fast replay?

A 10 ms QTimer heartbeat runs next to the real main window while it replays a recording (real
model, worker thread, live redraws); the figure is the longest gap between two heartbeats minus
the 10 ms period. Also printed: gap percentiles, the GUI thread's own time per frame (drain +
redraw) and the replay's real-time factor.

    python bench/gui_responsiveness.py [RECORDING] [--speed 4] [--seconds S]
    python bench/gui_responsiveness.py [RECORDING] --fast [--compare-diarize] [--fast-chunk 0.5,2,4] [--repeat N]

``--fast`` replays as fast as possible (the app's "as fast as possible" speed, i.e. speed None:
the worker joins the file's chunks into ``FAST_CHUNK`` seconds per pipeline call) and also prints
the replay's throughput: audio seconds per wall second on the worker's clock (what the status
bar reports at the end) and the GUI thread's CPU time. With ``--fast-chunk`` each listed length
replaces ``FAST_CHUNK`` in turn, in the same process and window.
``--compare-diarize`` also times ``diarize_file`` (what ``stream-spk diarize`` runs per file, 4 s
chunks) on the same file with a pipeline built from the same options, and prints both
throughputs and the ratio GUI / diarize. Every configuration first runs once untimed (model
loading and first use count in no figure); then each timed GUI replay is followed by a timed
diarize run, ``--repeat`` rounds, and the medians are printed (the ratio: the median over the
GUI runs of each one's throughput over that of the diarize run right after it, so that load from
other processes that comes and goes affects both sides of a ratio alike).
diarize runs on its own thread, niced like the app's worker thread (``--diarize-nice``, default
the worker's), so that another process on the machine slows both alike; 0 runs it like the CLI.

Default recording: /work/shared/data/dev/dev_vctk4.wav if present, else a mix of the test clips.
Runs offscreen unless a display is set (QT_QPA_PLATFORM=offscreen is the default here).
"""

from __future__ import annotations

from stream_spk.runtime import configure_threads

configure_threads()  # before torch loads, as the app's entry point does

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

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


def replay(window, recording: Path, speed: float | None, *, seconds: float | None = None,
           max_wall: float = 300.0) -> dict:
    """One replay of ``recording`` in ``window``, with the heartbeat; returns its figures."""
    from PyQt5.QtCore import QEventLoop, QTimer

    gaps: list[float] = []
    frames: list[float] = []
    last: list[float | None] = [None]
    state = {"started": False}
    loop = QEventLoop()

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
        over_time = seconds is not None and window.stream_now >= seconds
        if window.running and (over_time or now - start_wall > max_wall):
            window.stop_session()

    def ended(_msg) -> None:
        QTimer.singleShot(200, loop.quit)

    load_before = os.getloadavg()[0]
    start_wall = time.perf_counter()
    start_cpu = time.thread_time()  # this thread is the GUI thread
    heart = QTimer()
    heart.setInterval(HEARTBEAT_MS)
    heart.timeout.connect(beat)
    window.bridge.sessionEnded.connect(ended)
    window.source_bar.set_file(recording)
    window.source_bar.set_speed(speed)
    heart.start()
    QTimer.singleShot(0, window.start_session)
    loop.exec_()
    wall = time.perf_counter() - start_wall
    gui_cpu = time.thread_time() - start_cpu
    heart.stop()
    window.bridge.sessionEnded.disconnect(ended)
    window.frame_timer.timeout.disconnect()
    window.frame_timer.timeout.connect(original_tick)
    msg = window.last_session
    return {"gaps": gaps, "frames": frames, "wall": wall, "gui_cpu": gui_cpu, "load_before": load_before,
            "load_after": os.getloadavg()[0], "error": window.last_error if msg is None else msg.error,
            "audio": msg.audio_seconds if msg else 0.0, "worker_wall": msg.wall_seconds if msg else 0.0,
            "rtf": window.last_stats.real_time_factor if window.last_stats else float("nan")}


def print_stalls(runs: list[dict]) -> None:
    """The heartbeat and frame figures of one or more replays (pooled)."""
    g = (np.asarray([x for r in runs for x in r["gaps"]]) * 1000.0) - HEARTBEAT_MS
    f = np.asarray([x for r in runs for x in r["frames"]]) * 1000.0
    print(f"heartbeats: {len(g)}; stall beyond {HEARTBEAT_MS} ms: p50 {np.percentile(g, 50):.1f} ms, "
          f"p99 {np.percentile(g, 99):.1f} ms, max {g.max():.1f} ms; {int((g > 50).sum())} over 50 ms")
    if f.size:
        print(f"GUI frame (drain + redraw): mean {f.mean():.1f} ms, p99 {np.percentile(f, 99):.1f} ms, "
              f"max {f.max():.1f} ms over {len(f)} frames")


def lower_priority(nice: int) -> None:
    """Add ``nice`` to the calling thread's niceness (Linux), as the app's worker thread does."""
    if nice > 0 and sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)


def time_diarize(recording: Path, out: str, options, pipeline, nice: int) -> dict:
    """``diarize_file`` on its own thread (niced by ``nice``): audio seconds and wall seconds."""
    from stream_spk.cli.diarize_cmd import diarize_file

    result: dict = {}

    def work() -> None:
        lower_priority(nice)
        t0 = time.perf_counter()
        try:
            res = diarize_file(str(recording), out, options, pipeline=pipeline)
        except BaseException as exc:  # reported by the caller
            result["error"] = exc
            return
        result.update(audio=res["audio"], wall=time.perf_counter() - t0)

    thread = threading.Thread(target=work, name="bench-diarize")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recording", nargs="?", help="audio file (default: dev_vctk4.wav)")
    parser.add_argument("--speed", type=float, default=4.0, help="replay speed (default: 4)")
    parser.add_argument("--fast", action="store_true",
                        help="replay as fast as possible (the app's fastest speed) instead of --speed")
    parser.add_argument("--fast-chunk", default=None, metavar="S[,S...]",
                        help="with --fast: seconds per chunk, one replay each, instead of the app's FAST_CHUNK")
    parser.add_argument("--compare-diarize", action="store_true",
                        help="also time diarize_file on the same file; print both throughputs and GUI/diarize")
    parser.add_argument("--repeat", type=int, default=1,
                        help="timed runs per configuration with --fast (default: %(default)s)")
    parser.add_argument("--diarize-nice", type=int, default=None,
                        help="niceness added to diarize's thread (default: the app worker's)")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this much stream time")
    parser.add_argument("--max-wall", type=float, default=300.0,
                        help="stop the replay after this many wall seconds (default: %(default)s)")
    args = parser.parse_args()
    if args.fast_chunk and not args.fast:
        parser.error("--fast-chunk needs --fast")
    if args.compare_diarize and not args.fast:
        parser.error("--compare-diarize needs --fast (diarize is as fast as possible)")
    if args.compare_diarize and args.seconds is not None:
        parser.error("--compare-diarize replays the whole file: drop --seconds")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PyQt5.QtWidgets import QApplication

    import stream_spk.ui.app as app_module
    from stream_spk.session import SessionOptions, build_pipeline
    from stream_spk.ui.app import MainWindow
    from stream_spk.ui.worker import WORKER_NICE

    tmp = tempfile.TemporaryDirectory()
    recording = Path(args.recording) if args.recording else (DEV if DEV.exists() else _test_mix(Path(tmp.name)))
    app = QApplication.instance() or QApplication(sys.argv[:1])
    options = SessionOptions(profiles=str(Path(tmp.name) / "profiles.sqlite3"))  # no store there: no profiles
    diarize_options = SessionOptions(use_profiles=False)  # the same settings as the app's session
    diarize_pipeline = build_pipeline(diarize_options) if args.compare_diarize else None
    window = MainWindow(options)
    window.show()

    speed = None if args.fast else args.speed
    if not args.fast:
        run = replay(window, recording, speed, seconds=args.seconds, max_wall=args.max_wall)
        window.close()
        if not run["gaps"]:
            print("no heartbeats recorded (did the replay start?)", run["error"], file=sys.stderr)
            return 1
        g = (np.asarray(run["gaps"]) * 1000.0) - HEARTBEAT_MS
        print(f"recording: {recording} ({run['audio']:.1f} s at {args.speed:g}x, {run['wall']:.1f} s wall, "
              f"platform {app.platformName()})")
        print(f"machine load average (1 min) before/after: {run['load_before']:.2f} / {run['load_after']:.2f} "
              f"on {os.cpu_count()} CPUs")
        print_stalls([run])
        print(f"pipeline real-time factor: {run['rtf']:.3f}")
        print(f"LONGEST GUI STALL: {g.max():.1f} ms")
        return 0

    chunks = [float(x) for x in args.fast_chunk.split(",")] if args.fast_chunk else [app_module.FAST_CHUNK]
    nice = WORKER_NICE if args.diarize_nice is None else args.diarize_nice
    out = Path(tmp.name) / "rttm"
    out.mkdir()
    load_before = os.getloadavg()[0]

    def gui_run(chunk: float) -> dict:
        app_module.FAST_CHUNK = chunk  # read by MainWindow.start_session
        run = replay(window, recording, None, seconds=args.seconds, max_wall=args.max_wall)
        if run["error"] or not run["gaps"]:
            raise SystemExit(f"GUI replay failed (chunk {chunk:g} s): {run['error'] or 'no heartbeats'}")
        return run

    for chunk in chunks:  # warm-up: model loading and first use, untimed
        gui_run(chunk)
    if diarize_pipeline is not None:
        time_diarize(recording, str(out), diarize_options, diarize_pipeline, nice)
    runs: dict[float, list[dict]] = {c: [] for c in chunks}
    paired: dict[float, list[dict]] = {c: [] for c in chunks}  # the diarize run right after each GUI run
    for _ in range(args.repeat):
        for chunk in chunks:
            runs[chunk].append(gui_run(chunk))
            if diarize_pipeline is not None:
                paired[chunk].append(time_diarize(recording, str(out), diarize_options, diarize_pipeline, nice))
    window.close()

    audio = runs[chunks[0]][0]["audio"]
    print(f"recording: {recording} ({audio:.1f} s as fast as possible, platform {app.platformName()}); "
          f"{args.repeat} timed run(s) per configuration after one untimed")
    print(f"machine load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    speeds: dict[float, list[float]] = {}
    for chunk in chunks:
        speeds[chunk] = [r["audio"] / r["worker_wall"] for r in runs[chunk]]
        print(f"\n== GUI fast replay, {chunk:g} s chunks ==")
        print_stalls(runs[chunk])
        print(f"pipeline real-time factor: {runs[chunk][-1]['rtf']:.3f}")
        cpu = sum(r["gui_cpu"] for r in runs[chunk]) / sum(r["wall"] for r in runs[chunk])
        print(f"GUI thread CPU (heartbeat included): {100 * cpu:.0f}% of the wall time")
        print(f"throughput: {statistics.median(speeds[chunk]):.1f}x real time "
              f"(runs: {', '.join(f'{s:.1f}' for s in speeds[chunk])})")
    if diarize_pipeline is not None:
        d = {c: [r["audio"] / r["wall"] for r in paired[c]] for c in chunks}
        every = [x for c in chunks for x in d[c]]
        print(f"\n== diarize_file (4 s chunks), thread niceness +{nice} ==")
        print(f"throughput: {statistics.median(every):.1f}x real time "
              f"(runs: {', '.join(f'{s:.1f}' for s in every)})")
        print()
        for chunk in chunks:
            ratios = [g / x for g, x in zip(speeds[chunk], d[chunk])]
            print(f"GUI/diarize, {chunk:g} s chunks: {statistics.median(ratios):.2f} "
                  f"(each GUI run / the diarize run right after it: {', '.join(f'{r:.2f}' for r in ratios)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

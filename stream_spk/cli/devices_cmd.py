"""``stream-spk devices``: list the audio input devices (microphones)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("devices", help="list audio input devices (microphones)",
                            description="List the input devices PortAudio sees: index, name, "
                                        "input channels, default sample rate; * marks the default. "
                                        "Pass the index or part of the name as the device to use.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stream_spk.sources import list_input_devices

    devices = list_input_devices()
    if not devices:
        from stream_spk.sources import NO_INPUT_DEVICE

        print(NO_INPUT_DEVICE.replace(", then check `stream-spk devices`", ""))
        return 0
    width = max(len("name"), *(len(d["name"]) for d in devices))
    print(f"  {'index':>5}  {'name':<{width}}  {'ch':>3}  {'rate':>7}")
    for d in devices:
        mark = "*" if d["is_default"] else " "
        print(f"{mark} {d['index']:>5}  {d['name']:<{width}}  {d['channels']:>3}  "
              f"{d['default_samplerate']:>7.0f}")
    return 0

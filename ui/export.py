"""Export of a session as the user sees it (labels after renames and merges): RTTM and JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from stream_spk.rttm import atomic_write_text, format_rttm
from stream_spk.sinks import event_to_dict, merge_turns
from stream_spk.types import Event, SpeakerTurn
from stream_spk.ui.timeline_model import TimelineModel


def session_turns(model: TimelineModel) -> list[tuple[float, float, str]]:
    """Final turns with their current labels, same-label neighbours merged (as RTTM writes them)."""
    return merge_turns(model.final_turns())


def write_rttm(model: TimelineModel, path: str | os.PathLike, uri: str) -> int:
    """Write the session's final turns as RTTM; returns the number of lines."""
    turns = session_turns(model)
    atomic_write_text(Path(path), format_rttm(uri, turns))
    return len(turns)


def session_json(model: TimelineModel, events: Iterable[Event], uri: str, info: dict | None = None) -> dict:
    """The session as a JSON-ready dict: speakers, merged turns, and the event log.

    The event log holds every event as emitted (provisional turns left out); ``turns`` and
    ``speakers`` carry the labels after the user's renames and merges.
    """
    times = model.talk_times()
    shares = model.shares()
    speakers = [{"label": lane.label, "known": lane.known, "talk_time": round(times.get(lane.label, 0.0), 3),
                 "share": round(shares.get(lane.label, 0.0), 4)} for lane in model.lanes() if lane.turns]
    log = [event_to_dict(ev) for ev in events if not (isinstance(ev, SpeakerTurn) and ev.status == "provisional")]
    return {"uri": uri, **(info or {}), "duration": round(model.now, 3), "speakers": speakers,
            "turns": [{"start": round(s, 3), "end": round(e, 3), "label": lab} for s, e, lab in session_turns(model)],
            "events": log}


def write_json(model: TimelineModel, events: Iterable[Event], path: str | os.PathLike, uri: str,
               info: dict | None = None) -> None:
    """Write :func:`session_json` to ``path`` (atomically)."""
    text = json.dumps(session_json(model, events, uri, info), indent=1)
    atomic_write_text(Path(path), text + "\n")

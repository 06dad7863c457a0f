"""The timeline as data (no Qt): speaker turns by ``turn_id``, the provisional tail, relabels.

Fed the pipeline's events in order, it holds what the timeline widget draws and the speakers
panel lists: one lane per speaker (with a stable colour index), the final turns of each lane,
the single provisional segment, talk time per speaker and the current stream time.

Example:
    >>> m = TimelineModel()
    >>> m.apply([SpeakerTurn(1, 0.0, 1.5, "speaker 1", 0.9, "final", 2.0)])
    >>> m.talk_times()
    {'speaker 1': 1.5}
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from stream_spk.types import Event, Relabel, SpeakerTurn, Stats


@dataclass(frozen=True)
class Segment:
    """A drawn stretch of speech."""

    start: float
    end: float
    label: str
    score: float = 0.0


@dataclass
class Lane:
    """One speaker row: its current label, colour index and whether it is an enrolled speaker."""

    label: str
    color: int
    known: bool = False
    turns: dict[int, Segment] = field(default_factory=dict)


@dataclass
class Changes:
    """What changed since the last :meth:`TimelineModel.take_changes`."""

    lanes: set[str] = field(default_factory=set)  # labels whose bars changed
    layout: bool = False  # lanes added, removed, renamed or re-ordered


class TimelineModel:
    """Applies pipeline events; see the module docstring."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything (a new session)."""
        self._lanes: dict[str, Lane] = {}
        self._turn_lane: dict[int, str] = {}  # turn_id -> label of the lane holding it
        self.provisional: Segment | None = None
        self.now = 0.0
        self._next_color = 0
        self._changes = Changes(layout=True)

    # --- feeding --------------------------------------------------------------------------
    def apply(self, events: Iterable[Event]) -> None:
        """Apply events in the order the pipeline emitted them."""
        for ev in events:
            if isinstance(ev, SpeakerTurn):
                self._turn(ev)
            elif isinstance(ev, Relabel):
                self.relabel(ev.old, ev.new, known=ev.reason == "recognised")
            elif isinstance(ev, Stats):
                self.advance(ev.time)

    def advance(self, now: float) -> None:
        """The stream has reached ``now`` seconds."""
        self.now = max(self.now, float(now))

    def _lane(self, label: str) -> Lane:
        lane = self._lanes.get(label)
        if lane is None:
            lane = self._lanes[label] = Lane(label, self._next_color)
            self._next_color += 1
            self._changes.layout = True
        return lane

    def _turn(self, ev: SpeakerTurn) -> None:
        seg = Segment(ev.start, ev.end, ev.label, ev.score)
        if ev.status == "provisional":
            if self.provisional is not None:
                self._changes.lanes.add(self.provisional.label)
            self.provisional = seg
            lane = self._lane(ev.label)
        else:
            old = self._turn_lane.get(ev.turn_id)
            if old is not None and old != ev.label and old in self._lanes:
                self._lanes[old].turns.pop(ev.turn_id, None)
                self._changes.lanes.add(old)
            lane = self._lane(ev.label)
            lane.turns[ev.turn_id] = seg
            self._turn_lane[ev.turn_id] = ev.label
        if ev.name is not None:
            lane.known = True
        self._changes.lanes.add(ev.label)
        self.advance(ev.end)

    def relabel(self, old: str, new: str, known: bool = False) -> None:
        """Speaker ``old`` is now ``new``: a rename (new lane name) or a merge (lanes joined)."""
        if old == new:
            return
        src = self._lanes.pop(old, None)
        if src is None:
            if known and new in self._lanes:
                self._lanes[new].known = True
            return
        self._changes.layout = True
        self._changes.lanes.update({old, new})
        dst = self._lanes.get(new)
        relabelled = {tid: Segment(s.start, s.end, new, s.score) for tid, s in src.turns.items()}
        if dst is None:  # rename: the lane keeps its place and colour
            items = list(self._lanes.items())
            position = self._position_of(old, src)
            src.label = new
            src.turns = relabelled
            src.known = src.known or known
            items.insert(position, (new, src))
            self._lanes = dict(items)
        else:  # merge: the kept lane absorbs the dropped one's turns
            dst.turns.update(relabelled)
            dst.known = dst.known or known
        for tid in relabelled:
            self._turn_lane[tid] = new
        if self.provisional is not None and self.provisional.label == old:
            p = self.provisional
            self.provisional = Segment(p.start, p.end, new, p.score)

    def _position_of(self, label: str, lane: Lane) -> int:
        """Where a popped lane stood (lanes are ordered by colour index, i.e. first appearance)."""
        return sum(1 for other in self._lanes.values() if other.color < lane.color)

    def mark_known(self, label: str, known: bool = True) -> None:
        """Flag a speaker as enrolled (e.g. after "save as known speaker")."""
        if label in self._lanes:
            self._lanes[label].known = known
            self._changes.layout = True

    def end_of_stream(self) -> None:
        """The stream ended: the provisional tail is gone (everything is final now)."""
        if self.provisional is not None:
            self._changes.lanes.add(self.provisional.label)
            self.provisional = None

    # --- reading --------------------------------------------------------------------------
    def take_changes(self) -> Changes:
        """The changes since the previous call (and forget them)."""
        changes, self._changes = self._changes, Changes()
        return changes

    def lanes(self) -> list[Lane]:
        """Lanes that have something to show, in order of first appearance."""
        return [lane for lane in self._lanes.values()
                if lane.turns or (self.provisional is not None and self.provisional.label == lane.label)]

    def lane(self, label: str) -> Lane | None:
        return self._lanes.get(label)

    def labels(self) -> list[str]:
        return [lane.label for lane in self.lanes()]

    def segments(self, label: str) -> list[Segment]:
        """Final segments of a lane, sorted by start."""
        lane = self._lanes.get(label)
        return sorted(lane.turns.values(), key=lambda s: s.start) if lane else []

    def provisional_segments(self, label: str) -> list[Segment]:
        p = self.provisional
        return [p] if p is not None and p.label == label else []

    def final_turns(self) -> list[tuple[float, float, str]]:
        """Every final turn as (start, end, current label), sorted."""
        return sorted((s.start, s.end, lane.label) for lane in self._lanes.values() for s in lane.turns.values())

    def talk_times(self) -> dict[str, float]:
        """Seconds of final speech per speaker (lanes with any)."""
        return {lane.label: sum(s.end - s.start for s in lane.turns.values())
                for lane in self._lanes.values() if lane.turns}

    def shares(self) -> dict[str, float]:
        """Each speaker's fraction of the total talk time."""
        times = self.talk_times()
        total = sum(times.values())
        return {k: (v / total if total > 0 else 0.0) for k, v in times.items()}

"""The reward join: decisions x impressions x outcomes, within an attribution window.

The single-writer learner feeds :class:`RewardJoiner` every event in log order (which is not
event-time order) and gets back two kinds of samples:

- :class:`RelevanceSample` for the relevance model: who, what, how good, in which context;
- :class:`BanditSample` for the bandit: the slot's shared and action features exactly as the
  :class:`~feedback.events.Decision` served them, the logged ``propensity`` and the reward.

Semantics
---------

*Window.* A request's window opens when its list is served and closes once the joiner's
**watermark** (the largest event time seen, or a larger value given to :meth:`advance`)
reaches ``decision.timestamp + window_s``. It is measured on event time only, never on the
wall clock, so a replay joins exactly as the live service did. All slots of a list close
together.

*Slots.* A slot is ``(request_id, item_id)`` of an item placed in the decision's slate. Only
an impressed slot earns bandit and relevance samples; an item placed but never impressed
teaches the bandit nothing. An impression for an item not in the slate is an anomaly
(``unmatched_impression``) and is dropped. An outcome (play, skip, or any event type the
:class:`~feedback.rewards.RewardFunction` maps to a number) may arrive before its impression
(clients batch and reorder): it waits in the slot until the window closes.

*Reward.* A slot's reward is the **best** reward among its outcomes within the window: a skip
(0) and a long play give 1.0, two partial plays give the larger fraction. A slot with no
outcome earns the reward function's ``default_reward`` (0) at window close
(``defaulted``); with one it is ``joined``.

*Emission, exactly once per impressed slot.* Both samples of an impressed slot are emitted
together, either as soon as the slot is impressed and has reached ``reward.max_reward`` (no
later outcome can beat it, so the learners hear about a full play within seconds), or else at
window close with the best reward so far (skips and partial plays wait: a later play could
still win). Outcomes that arrive after the slot was emitted change nothing. Both samples
carry the **impression's** event time (the earliest impression seen) and the decision's
context; the bandit sample also carries the decision time.

*Relevance only.* An organic outcome (no ``request_id``), an outcome whose decision is
unknown to the decision log (``unknown_request``: never served, or expired), an outcome for
an item not in the slate (``unmatched_outcome``) and an outcome that arrives after its
window closed (``late``) each give one relevance sample at once, with the outcome's own
reward, context and event time. An outcome of a placed but never impressed slot gives one
relevance sample at window close (``unimpressed_outcome``). Impressions never teach alone:
a late or unknown impression is only counted.

*Duplicates.* An event whose ``event_id`` was already seen is ignored (``duplicates``). Ids
are remembered until the watermark passes the event's time plus ``window_s`` (and at least
until its list's window closes), which bounds the memory to about one window of events; a
retry arriving later than that is treated as new (the event log itself is idempotent on
``event_id``, so this is a second line of defence).

*Memory and restarts.* Pending slots leave memory when their window closes. :meth:`dump`
serialises the pending buffer, the remembered ids, the counters and the watermark as JSON
(no pickle); a joiner that :meth:`load` s it and reads on from the same log offset produces
exactly the outputs an uninterrupted one would have.

A hazard: one event time far in the future moves the watermark and closes every open window.
The event contract should reject timestamps ahead of the receiving clock.

>>> from feedback.decisions import InMemoryDecisionLog
>>> from feedback.events import Decision, Event, SlateEntry
>>> from feedback.rewards import RewardFunction
>>> log = InMemoryDecisionLog()
>>> log.put(Decision("r1", "u1", 100.0, "v1", (SlateEntry("a", 0, 0.9, 0.5, False),
...                                               SlateEntry("b", 1, 0.8, 0.4, True))))
>>> joiner = RewardJoiner(log, RewardFunction(), window_s=1800)
>>> out = joiner.process_many([
...     Event("e1", "impression", "u1", "a", 101.0, request_id="r1", position=0),
...     Event("e2", "impression", "u1", "b", 101.0, request_id="r1", position=1),
...     Event("e3", "play", "u1", "b", 105.0, request_id="r1", played_ms=60_000),
... ])
>>> [(s.item_id, s.reward, s.propensity) for s in out.bandit]
[('b', 1.0, 0.4)]
>>> [(s.item_id, s.reward) for s in joiner.flush().bandit]
[('a', 0.0)]
>>> joiner.stats["joined"], joiner.stats["defaulted"]
(1, 1)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from feedback.decisions import DecisionLog
from feedback.events import Context, Decision, Event, SlateEntry
from feedback.jsonparts import Part, Rows, json_parts
from feedback.rewards import RewardFunction

DEFAULT_WINDOW_S = 1800.0
_DUMP_FORMAT = 1

_COUNTERS = (
    "events",
    "duplicates",
    "joined",
    "defaulted",
    "late",
    "unknown_request",
    "unmatched_impression",
    "unmatched_outcome",
    "unimpressed_outcome",
    "repeat_impression",
    "organic",
    "no_outcome",
    "unknown_type",
)


@dataclass(frozen=True, slots=True)
class RelevanceSample:
    """What the relevance model learns: ``reward`` of ``item_id`` for ``user_id``."""

    user_id: str
    item_id: str
    reward: float
    context: Context
    event_time: float


@dataclass(frozen=True, slots=True)
class BanditSample:
    """What the bandit learns: one impressed slot, with the features and propensity served."""

    request_id: str
    user_id: str
    item_id: str
    position: int
    shared: Mapping[str, float | str]
    features: Mapping[str, float]
    propensity: float
    reward: float
    event_time: float
    decision_time: float


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """A served list once its window closed: what was shown and what each slot earned.

    The logged bandit feedback of off-policy evaluation (``segue feedback export-decisions``
    writes :meth:`to_dict` as JSON lines, ``simulations.loaders.load_decision_log`` reads
    them). ``impressed`` lists the positions shown; ``rewards`` is aligned with the slate
    (the reward each impressed slot was learned with; the default reward where nothing was
    shown, which the loader skips). Only lists with at least one impression are reported.
    """

    decision: Decision
    impressed: tuple[int, ...]
    rewards: tuple[float, ...]
    closed_at: float

    def to_dict(self) -> dict[str, Any]:
        """``Decision.to_dict()`` plus ``impressed``, ``rewards`` and ``closed_at``."""
        out = self.decision.to_dict()
        out["impressed"] = list(self.impressed)
        out["rewards"] = list(self.rewards)
        out["closed_at"] = self.closed_at
        return out


@dataclass(slots=True)
class JoinOutput:
    """The samples one call of the joiner produced, in emission order, and the lists whose
    windows closed (``outcomes``; not samples, not counted by ``len``)."""

    relevance: list[RelevanceSample] = field(default_factory=list)
    bandit: list[BanditSample] = field(default_factory=list)
    outcomes: list[DecisionOutcome] = field(default_factory=list)

    def extend(self, other: JoinOutput) -> None:
        """Append ``other``'s samples and outcomes to these."""
        self.relevance.extend(other.relevance)
        self.bandit.extend(other.bandit)
        self.outcomes.extend(other.outcomes)

    def __len__(self) -> int:
        return len(self.relevance) + len(self.bandit)


@dataclass(slots=True)
class _Slot:
    impressed_at: float | None = None
    best: float | None = None
    best_time: float | None = None
    emitted: bool = False


@dataclass(slots=True)
class _Pending:
    decision: Decision
    close_at: float
    entries: dict[str, SlateEntry]
    slots: dict[str, _Slot] = field(default_factory=dict)
    # the decision as JSON, made at the first dump and reused by the next (it never changes):
    # a list stays pending for the whole attribution window, through dozens of snapshot cuts,
    # and encoding tens of thousands of them again took most of a cut at 1M items
    encoded: orjson.Fragment | None = None


class RewardJoiner:
    """Joins decisions, impressions and outcomes into learner samples (module docstring).

    Not thread-safe: the learner is its single writer.
    """

    def __init__(
        self,
        decisions: DecisionLog,
        reward: RewardFunction | None = None,
        window_s: float = DEFAULT_WINDOW_S,
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.decisions = decisions
        self.reward = reward if reward is not None else RewardFunction()
        self.window_s = float(window_s)
        self._watermark: float | None = None
        self._pending: dict[str, _Pending] = {}
        self._closing: list[tuple[float, str]] = []
        self._seen: dict[str, float] = {}
        self._seen_expiry: list[tuple[float, str]] = []
        self._stats: dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._prefetched: dict[str, Decision | None] = {}

    # -- public surface -------------------------------------------------------------------

    @property
    def watermark(self) -> float | None:
        """The largest event time seen (or given to :meth:`advance`); ``None`` before any."""
        return self._watermark

    @property
    def stats(self) -> dict[str, int]:
        """A copy of the counters (see the module docstring for their meaning)."""
        return dict(self._stats)

    @property
    def pending(self) -> int:
        """How many lists have an open window."""
        return len(self._pending)

    def process(self, event: Event) -> JoinOutput:
        """Join one event, read in log order; returns the samples it completed.

        The decision lookup happens before any state changes, so when the decision log
        raises (Redis unreachable, say) the learner can retry the same event.
        """
        rid = event.request_id
        if rid is not None and rid not in self._prefetched and self._needs_lookup(rid, event):
            self._prefetched[rid] = self.decisions.get(rid)
            try:
                return self.process(event)
            finally:
                del self._prefetched[rid]
        out = JoinOutput()
        self._advance(event.timestamp, out)
        self._stats["events"] += 1
        if event.event_id in self._seen:
            self._stats["duplicates"] += 1
            return out
        if not self.reward.knows(event.type):
            self._stats["unknown_type"] += 1
            self._remember(event.event_id, event.timestamp + self.window_s)
            return out
        if event.request_id is None:
            self._remember(event.event_id, event.timestamp + self.window_s)
            self._organic(event, out)
        else:
            self._keyed(event, event.request_id, out)
        return out

    def process_many(self, events: Iterable[Event]) -> JoinOutput:
        """:meth:`process` each event in order, with one batched decision lookup."""
        events = list(events)
        if not events:
            return JoinOutput()
        latest = max(events, key=lambda e: e.timestamp)
        wanted = {
            e.request_id
            for e in events
            if e.request_id is not None and self._needs_lookup(e.request_id, latest)
        }
        if wanted:
            found = self.decisions.get_many(wanted)
            self._prefetched = {rid: found.get(rid) for rid in wanted}
        out = JoinOutput()
        try:
            for event in events:
                out.extend(self.process(event))
        finally:
            self._prefetched = {}
        return out

    def advance(self, watermark: float) -> JoinOutput:
        """Move the watermark forward to ``watermark`` and close the windows that ended."""
        out = JoinOutput()
        self._advance(watermark, out)
        return out

    def flush(self) -> JoinOutput:
        """Close every open window now, whatever the watermark (the end of a replay).

        Events for those lists read afterwards would open them again, so call it only when
        the stream has ended.
        """
        out = JoinOutput()
        while self._closing:
            _, request_id = heapq.heappop(self._closing)
            self._close(request_id, out)
        return out

    def dump(self) -> bytes:
        """The joiner's state as JSON bytes: pending slots, remembered ids, counters, watermark."""
        return b"".join(self.dump_parts())

    def dump_parts(self, per_part: int = 64) -> Iterator[Part]:
        """:meth:`dump`'s bytes in pieces of ``per_part`` lists (see :mod:`feedback.jsonparts`).

        The state must not change until the last piece is taken (the thread that feeds the
        joiner is the one that writes it).
        """

        def pending() -> Iterator[dict[str, Any]]:
            for p in self._pending.values():
                if p.encoded is None:
                    p.encoded = orjson.Fragment(orjson.dumps(p.decision.to_dict()))
                yield {
                    "decision": p.encoded,
                    "close_at": p.close_at,
                    "slots": [
                        [item, s.impressed_at, s.best, s.best_time, s.emitted]
                        for item, s in p.slots.items()
                    ],
                }

        state: dict[str, Any] = {
            "format": _DUMP_FORMAT,
            "window_s": self.window_s,
            "watermark": self._watermark,
            "stats": self._stats,
            "pending": Rows(pending()),
            "seen": Rows(self._seen.items(), per_part=2048),  # two short fields each
        }
        return json_parts(state, per_part)

    def load(self, data: bytes) -> None:
        """Replace this joiner's state with one produced by :meth:`dump`."""
        state = orjson.loads(data)
        if state.get("format") != _DUMP_FORMAT:
            raise ValueError(f"unsupported joiner dump format {state.get('format')!r}")
        self._watermark = state["watermark"]
        self._stats = dict.fromkeys(_COUNTERS, 0)
        self._stats.update(state["stats"])
        self._pending = {}
        for p in state["pending"]:
            decision = Decision.from_dict(p["decision"])
            pending = _Pending(decision, p["close_at"], {e.item_id: e for e in decision.slate})
            for item, impressed_at, best, best_time, emitted in p["slots"]:
                pending.slots[item] = _Slot(impressed_at, best, best_time, emitted)
            self._pending[decision.request_id] = pending
        self._closing = [(p.close_at, rid) for rid, p in self._pending.items()]
        heapq.heapify(self._closing)
        self._seen = {event_id: expiry for event_id, expiry in state["seen"]}
        self._seen_expiry = [(expiry, event_id) for event_id, expiry in self._seen.items()]
        heapq.heapify(self._seen_expiry)

    # -- internals ------------------------------------------------------------------------

    def _advance(self, t: float, out: JoinOutput) -> None:
        if self._watermark is not None and t <= self._watermark:
            return
        self._watermark = t
        while self._closing and self._closing[0][0] <= t:
            _, request_id = heapq.heappop(self._closing)
            self._close(request_id, out)
        while self._seen_expiry and self._seen_expiry[0][0] <= t:
            _, event_id = heapq.heappop(self._seen_expiry)
            del self._seen[event_id]

    def _remember(self, event_id: str, expiry: float) -> None:
        self._seen[event_id] = expiry
        heapq.heappush(self._seen_expiry, (expiry, event_id))

    def _needs_lookup(self, request_id: str, event: Event) -> bool:
        """Whether joining ``event`` (or any event up to its time) may read the decision log."""
        pending = self._pending.get(request_id)
        if pending is None:
            return True
        watermark = self._watermark if self._watermark is not None else event.timestamp
        return pending.close_at <= max(watermark, event.timestamp)

    def _lookup(self, request_id: str) -> Decision | None:
        if request_id in self._prefetched:
            return self._prefetched[request_id]
        return self.decisions.get(request_id)

    def _organic(self, event: Event, out: JoinOutput) -> None:
        reward = self.reward(event)
        if reward is None:
            self._stats["no_outcome"] += 1
            return
        self._stats["organic"] += 1
        out.relevance.append(_relevance_of(event, reward))

    def _keyed(self, event: Event, request_id: str, out: JoinOutput) -> None:
        is_impression = event.type == "impression"
        pending = self._pending.get(request_id)
        if pending is None:
            decision = self._lookup(request_id)
            if decision is None:
                self._stats["unknown_request"] += 1
                self._remember(event.event_id, event.timestamp + self.window_s)
                self._relevance_only(event, out)
                return
            close_at = decision.timestamp + self.window_s
            assert self._watermark is not None  # set by process() before this call
            if self._watermark >= close_at:
                self._stats["late"] += 1
                self._remember(event.event_id, event.timestamp + self.window_s)
                self._relevance_only(event, out)
                return
            entries = {e.item_id: e for e in decision.slate}
            pending = _Pending(decision, close_at, entries)
            self._pending[request_id] = pending
            heapq.heappush(self._closing, (close_at, request_id))
        self._remember(event.event_id, max(event.timestamp + self.window_s, pending.close_at))
        if event.item_id not in pending.entries:
            if is_impression:
                self._stats["unmatched_impression"] += 1
            else:
                self._stats["unmatched_outcome"] += 1
                self._relevance_only(event, out)
            return
        slot = pending.slots.get(event.item_id)
        if slot is None:
            slot = pending.slots[event.item_id] = _Slot()
        if is_impression:
            if slot.impressed_at is not None or slot.emitted:
                self._stats["repeat_impression"] += 1
                if slot.impressed_at is not None and event.timestamp < slot.impressed_at:
                    slot.impressed_at = event.timestamp
                return
            slot.impressed_at = event.timestamp
        elif not slot.emitted:
            reward = self.reward(event)
            if reward is None:
                self._stats["no_outcome"] += 1
                return
            if (
                slot.best is None
                or slot.best_time is None
                or reward > slot.best
                or (reward == slot.best and event.timestamp < slot.best_time)
            ):
                slot.best, slot.best_time = reward, event.timestamp
        if (
            not slot.emitted
            and slot.impressed_at is not None
            and slot.best is not None
            and slot.best >= self.reward.max_reward
        ):
            self._emit(pending, event.item_id, slot, out)

    def _relevance_only(self, event: Event, out: JoinOutput) -> None:
        if event.type == "impression":
            return
        reward = self.reward(event)
        if reward is None:
            self._stats["no_outcome"] += 1
            return
        out.relevance.append(_relevance_of(event, reward))

    def _emit(self, pending: _Pending, item_id: str, slot: _Slot, out: JoinOutput) -> None:
        assert slot.impressed_at is not None
        decision = pending.decision
        entry = pending.entries[item_id]
        if slot.best is None:
            reward = self.reward.default_reward
            self._stats["defaulted"] += 1
        else:
            reward = slot.best
            self._stats["joined"] += 1
        out.relevance.append(
            RelevanceSample(decision.user_id, item_id, reward, decision.context, slot.impressed_at)
        )
        out.bandit.append(
            BanditSample(
                request_id=decision.request_id,
                user_id=decision.user_id,
                item_id=item_id,
                position=entry.position,
                shared=decision.shared,
                features=entry.features,
                propensity=entry.propensity,
                reward=reward,
                event_time=slot.impressed_at,
                decision_time=decision.timestamp,
            )
        )
        slot.emitted = True

    def _close(self, request_id: str, out: JoinOutput) -> None:
        pending = self._pending.pop(request_id)
        self._report_outcome(pending, out)
        order = sorted(pending.slots, key=lambda item: (pending.entries[item].position, item))
        for item_id in order:
            slot = pending.slots[item_id]
            if slot.emitted:
                continue
            if slot.impressed_at is not None:
                self._emit(pending, item_id, slot, out)
            elif slot.best is not None:
                assert slot.best_time is not None
                self._stats["unimpressed_outcome"] += 1
                out.relevance.append(
                    RelevanceSample(
                        pending.decision.user_id,
                        item_id,
                        slot.best,
                        pending.decision.context,
                        slot.best_time,
                    )
                )

    def _report_outcome(self, pending: _Pending, out: JoinOutput) -> None:
        default = self.reward.default_reward
        impressed: list[int] = []
        rewards: list[float] = []
        for entry in pending.decision.slate:
            slot = pending.slots.get(entry.item_id)
            if slot is not None and slot.impressed_at is not None:
                impressed.append(entry.position)
                rewards.append(slot.best if slot.best is not None else default)
            else:
                rewards.append(default)
        if impressed:
            out.outcomes.append(
                DecisionOutcome(
                    decision=pending.decision,
                    impressed=tuple(impressed),
                    rewards=tuple(rewards),
                    closed_at=self._watermark if self._watermark is not None else 0.0,
                )
            )


def _relevance_of(event: Event, reward: float) -> RelevanceSample:
    return RelevanceSample(event.user_id, event.item_id, reward, event.context, event.timestamp)

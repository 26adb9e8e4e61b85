"""The runtime's decisions, table by table, without sockets or processes."""

from __future__ import annotations

import pytest

from pipeline.policies.fixed_batches import FixedBatches
from pipeline.policies.slot_credits import SlotCredits

# -- fixed batches -------------------------------------------------------------------------

BATCH_CASES = [
    # (name, batch size, arrivals (seq or ("end", total)), batches handed out, in order)
    ("in order", 2, [0, 1, 2, 3], [[0, 1], [2, 3]]),
    ("a replay arriving ahead of a gap", 3, [0, 2, 4, 5, 1, 3], [[0, 1, 2], [3, 4, 5]]),
    ("the last partial batch waits for end-of-stream", 3, [0, 1, 2, 3, 4, ("end", 5)], [[0, 1, 2], [3, 4]]),
    ("end-of-stream on a batch boundary", 2, [0, 1, ("end", 2)], [[0, 1]]),
    ("end before the last frames come (replay)", 2, [0, ("end", 3), 1, 2], [[0, 1], [2]]),
    ("an empty stream", 4, [("end", 0)], []),
    # whole batches go at once (replays come in order, so in practice batches do too)
    ("a batch goes as soon as it is whole", 1, [0, 2, 1], [[0], [2], [1]]),
]


@pytest.mark.parametrize("name, size, arrivals, expected", BATCH_CASES, ids=[c[0] for c in BATCH_CASES])
def test_fixed_batches(name, size, arrivals, expected):
    batches = FixedBatches(size)
    out = []
    for item in arrivals:
        if isinstance(item, tuple):
            batches.end(item[1])
        else:
            batches.add(item, item)
        out += batches.ready()
    assert out == expected
    assert batches.waiting() == 0


def test_a_newer_copy_replaces_the_older_and_stale_copies_go():
    batches: FixedBatches[tuple[int, int]] = FixedBatches(2)
    batches.add(0, (0, 1))  # (seq, generation of its slot)
    batches.add(0, (0, 2))  # a restarted capture wrote frame 0 again
    batches.add(1, (1, 1))
    current = {0: 2, 1: 3}  # frame 1's slot was rewritten since: its copy is stale
    assert batches.discard(lambda item: current[item[0]] != item[1]) == 1
    assert batches.ready() == []  # frame 1 must come again
    batches.add(1, (1, 3))
    assert batches.ready() == [[(0, 2), (1, 3)]]


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError):
        FixedBatches(0)


# -- slot credits --------------------------------------------------------------------------

def test_slots_are_handed_out_and_released_by_generation():
    credits = SlotCredits(slots=2, batch_size=4)
    a, b = credits.take(), credits.take()
    credits.sent(a, {"slot": a, "gen": 1})
    credits.sent(b, {"slot": b, "gen": 1})
    assert not credits.has_free()
    assert not credits.release(a, gen=0)  # a late release of an older copy frees nothing
    assert not credits.release(7, gen=1)  # a slot that is not in flight
    assert credits.release(a, gen=1) and credits.free == type(credits.free)([a])
    assert not credits.release(a, gen=1)  # twice: no double credit
    assert list(credits.in_flight) == [b]


def test_live_admission_keeps_at_most_one_batch_waiting_for_the_model():
    credits = SlotCredits(slots=10, batch_size=2)
    for gen in (1, 2):
        slot = credits.take()
        assert credits.can_admit_live() or gen == 2
        credits.sent(slot, {"slot": slot, "gen": gen})
    assert not credits.can_admit_live()  # two admitted, none taken: the next batch is full
    credits.taken(2)
    assert credits.can_admit_live()
    credits.taken(5)  # never below zero
    assert credits.awaiting_model == 0


def test_replay_sends_what_is_in_flight_in_order_unless_its_slot_was_rewritten():
    credits = SlotCredits(slots=3, batch_size=8)
    for gen in (10, 20, 30):
        slot = credits.take()
        credits.sent(slot, {"slot": slot, "gen": gen, "seq": gen // 10})
    credits.taken(3)
    generations = {0: 10, 1: 21, 2: 30}  # slot 1 holds another frame by now
    again = credits.replay(generations.__getitem__)
    assert [h["seq"] for h in again] == [1, 3]
    assert credits.awaiting_model == 2  # replayed frames wait for the model again


# -- publish ledger ------------------------------------------------------------------------

from pipeline.policies.publish_ledger import Decision, PublishLedger  # noqa: E402

P, E, D = Decision.PUBLISH, Decision.EARLY, Decision.DUPLICATE

LEDGER_CASES = [
    # (name, commit_every, [(seq, slot, gen)], expected decisions, releases along the way)
    ("in order, committing every 2", 2, [(0, 0, 1), (1, 1, 1), (2, 2, 1)], [P, P, P], [[], [(0, 1), (1, 1)], []]),
    ("a frame ahead of a gap is dropped, its slot kept", 2, [(0, 0, 1), (2, 2, 1), (1, 1, 1)], [P, E, P],
     [[], [], [(0, 1), (1, 1)]]),
    ("a duplicate of a committed frame releases its slot", 1, [(0, 0, 1), (0, 5, 2)], [P, D], [[(0, 1)], [(5, 2)]]),
    ("a newer copy of a held frame is held instead", 4, [(0, 0, 1), (0, 3, 2)], [P, D], [[], [(0, 1)]]),
    ("the same copy again changes nothing", 4, [(0, 0, 1), (0, 0, 1)], [P, D], [[], []]),
]


@pytest.mark.parametrize("name, every, arrivals, decisions, releases", LEDGER_CASES, ids=[c[0] for c in LEDGER_CASES])
def test_publish_ledger(name, every, arrivals, decisions, releases):
    ledger = PublishLedger(["0"], commit_every=every)
    got_decisions, got_releases = [], []
    for seq, slot, gen in arrivals:
        verdict = ledger.arrive("0", seq, slot, gen)
        got_decisions.append(verdict.decision)
        released = list(verdict.release)
        if verdict.decision is Decision.PUBLISH:
            released += ledger.published("0", seq, slot, gen, segment_closed=None)
        got_releases.append(released)
    assert got_decisions == decisions
    assert got_releases == releases


def test_ledger_commits_at_segment_ends_and_resumes_there():
    ledger = PublishLedger(["a", "b"], commit_every=99)
    assert ledger.published("a", 0, 0, 1, segment_closed=False) == []
    assert ledger.published("a", 1, 1, 1, segment_closed=True) == [(0, 1), (1, 1)]
    assert ledger.streams["a"].committed == 2 and ledger.streams["b"].committed == 0
    assert not ledger.complete({"a": 2, "b": 1}) and ledger.complete({"a": 2})
    assert not ledger.complete({"c": 1})  # a stream never seen has published nothing
    restarted = PublishLedger(["a"], commit_every=99, resume={"a": 2})
    assert restarted.arrive("a", 1, 4, 1).decision is Decision.DUPLICATE  # committed before the crash
    assert restarted.arrive("a", 2, 5, 1).decision is Decision.PUBLISH
    assert (restarted.duplicates_dropped, restarted.early_dropped) == (1, 0)


def test_commit_all_releases_every_held_slot():
    ledger = PublishLedger(["0", "1"], commit_every=10)
    ledger.published("0", 0, 3, 1, None)
    ledger.published("1", 0, 4, 1, None)
    assert sorted(ledger.commit_all()) == [(3, 1), (4, 1)]
    assert ledger.commit_all() == []


# -- restart policy ------------------------------------------------------------------------

from pipeline.policies.restart import RestartPolicy  # noqa: E402

POLICY = RestartPolicy(max_restarts=3, window_s=60.0, backoff_s=0.5, backoff_max_s=1.5)

RESTART_CASES = [
    # (name, earlier restarts, now, reported error, restart?, delay, reason fragment)
    ("first crash", [], 100.0, False, True, 0.5, ""),
    ("backoff doubles per recent restart", [90.0], 100.0, False, True, 1.0, ""),
    ("backoff is capped", [80.0, 90.0], 100.0, False, True, 1.5, ""),
    ("a crash loop gives up", [80.0, 90.0, 95.0], 100.0, False, False, 0.0, "gave up after 3 restart(s) within 60 s"),
    ("restarts outside the window are forgiven", [10.0, 20.0, 30.0], 100.0, False, True, 0.5, ""),
    ("an error the stage reported is not retried", [], 100.0, True, False, 0.0, "reported an error"),
]


@pytest.mark.parametrize("name, history, now, reported, restart, delay, reason", RESTART_CASES,
                         ids=[c[0] for c in RESTART_CASES])
def test_restart_policy(name, history, now, reported, restart, delay, reason):
    decision = POLICY.decide(history, now, reported)
    assert decision.restart is restart
    assert decision.delay_s == delay
    assert reason in decision.reason


def test_restarts_off():
    decision = RestartPolicy(0, 60.0, 0.5, 1.0).decide([], 0.0, False)
    assert not decision.restart and decision.reason == "restarts are off"


def test_timed_admission_lets_the_next_batch_in_just_before_the_running_one_ends():
    credits = SlotCredits(slots=16, batch_size=4, frame_interval_s=0.033)
    assert credits.can_admit_live(now=0.0)  # nothing known yet: open
    credits.taken(0, now=10.0, batch_s=0.5)  # a batch starts now and lasts about 0.5 s
    fill = 5 * 0.033
    assert not credits.can_admit_live(now=10.0)
    assert not credits.can_admit_live(now=10.0 + 0.5 - fill - 0.01)
    assert credits.can_admit_live(now=10.0 + 0.5 - fill + 0.01)
    credits.taken(0, now=20.0, batch_s=0.1)  # batches got faster: the estimate follows, smoothed
    assert credits.batch_s == pytest.approx(0.7 * 0.5 + 0.3 * 0.1)
    credits.taken(0, now=30.0, batch_s=0.05)
    credits.taken(0, now=40.0, batch_s=0.05)
    credits.taken(0, now=50.0, batch_s=0.05)
    assert credits.batch_s < fill and credits.can_admit_live(now=50.0)  # a fast model: never held back
    untimed = SlotCredits(slots=4, batch_size=2)  # no frame interval (files): count-based only
    untimed.taken(0, now=1.0, batch_s=9.0)
    assert untimed.can_admit_live(now=1.0)

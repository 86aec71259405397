"""The job state machine, table-driven: every pair of states is either allowed or refused."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from core.errors import IllegalTransition
from core.states import (
    CANCELLABLE,
    FINAL_STATES,
    JobState,
    can_transition,
    check_transition,
    sources_of,
)

Q, S, R, P, D = (
    JobState.QUEUED,
    JobState.SUBMITTED,
    JobState.RUNNING,
    JobState.POSTPROCESSING,
    JobState.DELIVERING,
)
DONE, FAILED, CANCELLED = JobState.DONE, JobState.FAILED, JobState.CANCELLED

# The specification, written out independently of core.states.
ALLOWED: dict[JobState, set[JobState]] = {
    Q: {S, FAILED, CANCELLED},
    S: {R, P, Q, FAILED, CANCELLED},  # lost backend -> queued; fast job skips running
    R: {P, Q, FAILED, CANCELLED},
    P: {D, FAILED, CANCELLED},
    D: {DONE, FAILED},  # a result being sent is not cancelled half-way
    DONE: set(),
    FAILED: set(),
    CANCELLED: set(),
}

ALL_PAIRS = list(itertools.product(JobState, JobState))
ALLOWED_PAIRS = [(a, b) for a, b in ALL_PAIRS if b in ALLOWED[a]]
REFUSED_PAIRS = [(a, b) for a, b in ALL_PAIRS if b not in ALLOWED[a]]


def _name(pair: object) -> str:
    a, b = pair  # type: ignore[misc]
    return f"{a.value}->{b.value}"


def test_table_covers_every_state() -> None:
    assert set(ALLOWED) == set(JobState)
    assert len(ALLOWED_PAIRS) == 17
    assert len(ALLOWED_PAIRS) + len(REFUSED_PAIRS) == len(JobState) ** 2


@pytest.mark.parametrize("pair", ALLOWED_PAIRS, ids=_name)
def test_allowed(pair: tuple[JobState, JobState]) -> None:
    current, target = pair
    assert can_transition(current, target) is True
    check_transition(current, target)  # does not raise


@pytest.mark.parametrize("pair", REFUSED_PAIRS, ids=_name)
def test_refused(pair: tuple[JobState, JobState]) -> None:
    current, target = pair
    assert can_transition(current, target) is False
    with pytest.raises(IllegalTransition) as caught:
        check_transition(current, target)
    assert f"{current.value} -> {target.value}" in str(caught.value)
    assert caught.value.user_message  # safe text for the user


@pytest.mark.parametrize("state", list(JobState), ids=str)
def test_no_self_transitions(state: JobState) -> None:
    assert not can_transition(state, state)


def test_final_states_have_no_exits() -> None:
    assert {DONE, FAILED, CANCELLED} == FINAL_STATES
    for state in JobState:
        assert state.final is (state in FINAL_STATES)
    for final in FINAL_STATES:
        assert not any(can_transition(final, target) for target in JobState)


def test_every_live_state_can_fail_and_reach_the_end() -> None:
    for state in set(JobState) - FINAL_STATES:
        assert can_transition(state, FAILED)
        # Some path leads to a final state.
        seen, todo = {state}, [state]
        while todo:
            for nxt in ALLOWED[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen & FINAL_STATES


def test_every_state_is_reachable_from_queued() -> None:
    seen, todo = {Q}, [Q]
    while todo:
        current = todo.pop()
        for nxt in JobState:
            if can_transition(current, nxt) and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(JobState)


@pytest.mark.parametrize("target", list(JobState), ids=str)
def test_sources_of(target: JobState) -> None:
    assert sources_of(target) == {s for s, targets in ALLOWED.items() if target in targets}


def test_cancellable_and_in_backend() -> None:
    assert sources_of(CANCELLED) == CANCELLABLE
    assert {Q, S, R, P} == CANCELLABLE
    assert {s for s in JobState if s.in_backend} == {S, R}
    assert sources_of(Q) == {S, R}  # requeue only from a backend


def test_states_match_the_database_check() -> None:
    sql = (Path(__file__).resolve().parents[2] / "sql" / "0001_init.sql").read_text()
    match = re.search(r"CHECK \(status IN \(([^)]*)\)\)", sql)
    assert match is not None
    in_db = set(re.findall(r"'([a-z]+)'", match.group(1)))
    assert in_db == {s.value for s in JobState}

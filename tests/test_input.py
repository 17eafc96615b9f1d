"""Property tests of ``Inbox``, a session's message rules, on their own: no server, no PTY.

The rules (``labkernel/session/input.py``): a message numbered ``seq`` by its client
is taken once, a number at or below that client's last is only acknowledged; the
``max_clients`` clients seen most recently are remembered (a retry counts as seen);
a message its ``apply`` refuses, or that finds the held messages full, is not
taken; held or applied at once, de-duplication is the same, and held messages are
released in the order they came. An independent model (plain lists, no
OrderedDict) says what each delivery must do.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkernel.errors import PayloadTooLarge, SignalRefused
from labkernel.session.input import Inbox

PROPERTY = settings(max_examples=400, deadline=None)

#: (client, seq, hold, refused): few clients and numbers, so that retries, reordering
#: and forgetting all happen.
MESSAGE = st.tuples(st.sampled_from([None, "", "a", "b", "c", "d"]),
                    st.none() | st.integers(0, 6), st.booleans(), st.booleans())


class Model:
    """The rules, written plainly: clients as a list, least recently seen first."""

    def __init__(self, max_clients: int, max_held: int):
        self.max_clients, self.max_held = max_clients, max_held
        self.last: list[tuple[str, int]] = []
        self.held = 0

    def deliver(self, client: str | None, seq: int | None, hold: bool, refused: bool) -> str:
        key = client or ""
        known = [s for k, s in self.last if k == key]
        if seq is not None and known and known[0] >= seq:
            self.last = [(k, s) for k, s in self.last if k != key] + [(key, known[0])]
            return "duplicate"
        if hold and self.held >= self.max_held:
            return "full"
        if not hold and refused:
            return "refused"
        if seq is not None:
            self.last = [(k, s) for k, s in self.last if k != key] + [(key, seq)]
            self.last = self.last[-self.max_clients:]
        self.held += hold
        return "held" if hold else "applied"


def deliver(inbox: Inbox, number: int, message: tuple[Any, ...], applied: list[int]) -> str:
    client, seq, hold, refused = message

    def apply() -> None:
        if refused:
            raise SignalRefused("refused")
        applied.append(number)
    try:
        taken = inbox.deliver(client, seq, apply, hold=hold)
    except PayloadTooLarge:
        return "full"
    except SignalRefused:
        return "refused"
    return ("held" if hold else "applied") if taken else "duplicate"


@PROPERTY
@given(st.lists(MESSAGE, max_size=60), st.integers(1, 4), st.integers(0, 4))
def test_every_message_is_taken_at_most_once_and_exactly_as_the_rules_say(
        messages: list[tuple[Any, ...]], max_clients: int, max_held: int) -> None:
    inbox, model, applied = Inbox(max_clients, max_held), Model(max_clients, max_held), []
    outcomes = []
    for number, message in enumerate(messages):
        outcomes.append(deliver(inbox, number, message, applied))
        assert outcomes[-1] == model.deliver(*message)
    assert applied == [n for n, outcome in enumerate(outcomes) if outcome == "applied"]


@PROPERTY
@given(st.lists(MESSAGE, max_size=60), st.integers(1, 4))
def test_held_messages_are_released_in_order_and_then_applied_like_the_others(
        messages: list[tuple[Any, ...]], max_clients: int) -> None:
    inbox, model, applied = Inbox(max_clients, max_held=1000), Model(max_clients, max_held=1000), []
    outcomes = [deliver(inbox, n, m, applied) for n, m in enumerate(messages)]
    assert outcomes == [model.deliver(*m) for m in messages]
    applied.clear()
    for apply in inbox.release():
        try:
            apply()
        except SignalRefused:
            pass
    held = [n for n, (m, outcome) in enumerate(zip(messages, outcomes)) if outcome == "held"]
    assert applied == [n for n in held if not messages[n][3]]
    assert inbox.release() == []


@PROPERTY
@given(st.lists(MESSAGE, max_size=60), st.integers(1, 4), st.data())
def test_deduplication_is_the_same_whether_messages_are_held_or_applied(
        messages: list[tuple[Any, ...]], max_clients: int, data: st.DataObject) -> None:
    # Refusals aside (a held message is only refused later, at its release), whether a
    # message is held or applied at once changes nothing of which ones are taken.
    accepted = [(client, seq, hold, False) for client, seq, hold, _ in messages]
    flipped = [(client, seq, data.draw(st.booleans()), False) for client, seq, _, _ in accepted]
    first, second = Inbox(max_clients, 1000), Inbox(max_clients, 1000)
    took_first = [deliver(first, n, m, []) != "duplicate" for n, m in enumerate(accepted)]
    took_second = [deliver(second, n, m, []) != "duplicate" for n, m in enumerate(flipped)]
    assert took_first == took_second


@pytest.mark.parametrize("hold", [False, True])
def test_a_client_forgotten_for_newer_ones_has_its_retry_taken_again(hold: bool) -> None:
    inbox = Inbox(max_clients=2)
    assert inbox.deliver("a", 1, lambda: None, hold=hold)
    assert inbox.deliver("b", 1, lambda: None, hold=hold)
    assert not inbox.deliver("a", 1, lambda: None, hold=hold)  # a retry: "a" is now the newest
    assert inbox.deliver("c", 1, lambda: None, hold=hold)  # forgets "b", not "a"
    assert not inbox.deliver("a", 1, lambda: None, hold=hold)
    assert inbox.deliver("b", 1, lambda: None, hold=hold)

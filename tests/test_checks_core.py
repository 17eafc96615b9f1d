"""The pure parts of hidden scripts: masking with truncation, and step progress."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from labkernel.labs.checks import MASK, Masker, StepProgress, _message

#: Secrets and the rest of the output are written with different characters, so
#: that any secret character in a message is a leak.
SECRET_CHARS, PLAIN_CHARS = "abcxyz-é", " XYZ\n0123"


@settings(max_examples=500, deadline=None)
@given(secrets=st.lists(st.text(alphabet=SECRET_CHARS, min_size=1, max_size=20), min_size=1, max_size=3),
       pieces=st.lists(st.one_of(st.text(alphabet=PLAIN_CHARS, max_size=15), st.integers(0, 2)), max_size=12),
       limit=st.integers(1, 80))
def test_no_part_of_a_secret_survives_in_a_message_however_the_output_is_cut(
        secrets: list[str], pieces: list, limit: int) -> None:
    mask = Masker(secrets)
    text = "".join(secrets[p % len(secrets)] if isinstance(p, int) else p for p in pieces)
    data = text.encode()
    # what run_script keeps: the first limit + longest bytes, and the total
    message = _message(data[: limit + mask.longest], len(data), limit, mask)
    body = message.split("\n[output truncated")[0]
    assert not set(body) & set(SECRET_CHARS), body
    assert len(body.encode()) <= limit or len(data) <= limit


def test_a_message_under_the_limit_is_the_output_masked() -> None:
    mask = Masker(["hunter2"])
    assert _message(b"pw=hunter2\n", 11, 100, mask) == f"pw={MASK}\n"


def test_a_secret_cut_by_the_reading_limit_is_masked_where_it_starts() -> None:
    secret = "abcdefghijklmnop"
    mask = Masker([secret])
    data = (secret * 2).encode()
    message = _message(data[:10 + len(secret)], len(data), 10, mask)
    assert message.startswith(MASK) and "ab" not in message.split("\n")[0]


@settings(max_examples=300, deadline=None)
@given(count=st.integers(0, 6), checks=st.lists(st.tuples(st.integers(1, 6), st.sampled_from([True, False, None])),
                                                 max_size=30))
def test_the_current_step_is_the_first_not_passed_and_each_step_is_entered_once(
        count: int, checks: list[tuple[int, bool | None]]) -> None:
    progress = StepProgress(count)
    passed: dict[int, bool] = {}
    entered = []
    first = progress.enter_current()
    if first is not None:
        entered.append(first)
    for step, result in checks:
        if step > count:
            continue
        progress.record(step, result)
        passed[step] = result is not False
        expected = next((i for i in range(1, count + 1) if not passed.get(i)), None)
        assert progress.current == expected
        step_in = progress.enter_current()
        if step_in is not None:
            assert step_in == expected and step_in not in entered
            entered.append(step_in)
    states = [s["state"] for s in progress.model([f"t{i}" for i in range(count)])]
    for i, state in enumerate(states, 1):
        assert state == ("pending" if i not in passed else "passed" if passed[i] else "failed")

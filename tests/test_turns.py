"""serving/turns.py: the storefront's work of the requests of one event-loop turn, run back to back."""
from __future__ import annotations

import asyncio
import contextvars

import pytest

from serving.turns import WorkTurns

shopper = contextvars.ContextVar("shopper", default=None)


def test_the_requests_of_one_turn_share_one_callback_in_arrival_order():
    turns, ran = WorkTurns(), []

    async def request(i):
        await asyncio.sleep(0)  # every request starts before any reaches the work (as CountTowardsConcurrency does)
        return await turns.run(lambda: ran.append(i) or i * i)

    async def main():
        return await asyncio.gather(*(request(i) for i in range(6)))

    assert asyncio.run(main()) == [i * i for i in range(6)]
    assert ran == list(range(6))
    assert (turns.groups, turns.works) == (1, 6)


def test_a_lone_request_is_answered_and_later_ones_form_their_own_group():
    turns = WorkTurns()

    async def main():
        first = await turns.run(lambda: "a")
        second = await asyncio.gather(turns.run(lambda: "b"), turns.run(lambda: "c"))
        return first, second

    assert asyncio.run(main()) == ("a", ["b", "c"])
    assert (turns.groups, turns.works) == (2, 3)


def test_one_requests_error_is_raised_in_that_request_alone():
    turns = WorkTurns()

    def broken():
        raise ValueError("unknown item 'x'")

    async def main():
        return await asyncio.gather(turns.run(lambda: 1), turns.run(broken), turns.run(lambda: 3),
                                    return_exceptions=True)

    first, error, third = asyncio.run(main())
    assert (first, third) == (1, 3)
    assert isinstance(error, ValueError) and "unknown item" in str(error)


def test_a_group_is_at_most_max_group_works_the_rest_run_on_the_next_turn():
    turns, sizes, current = WorkTurns(max_group=4), [], []
    run_queued = turns._run_queued

    def counted():  # the callback, counting the works it runs
        current.clear()
        run_queued()
        sizes.append(len(current))
    turns._run_queued = counted

    async def main():
        return await asyncio.gather(*(turns.run(lambda i=i: current.append(i) or i) for i in range(10)))

    assert asyncio.run(main()) == list(range(10))
    assert sizes == [4, 4, 2]
    assert (turns.groups, turns.works) == (3, 10)


def test_a_request_cancelled_while_queued_has_no_work_done():
    turns, ran = WorkTurns(), []

    async def main():
        gone = asyncio.ensure_future(turns.run(lambda: ran.append("gone")))
        kept = asyncio.ensure_future(turns.run(lambda: ran.append("kept") or "kept"))
        await asyncio.sleep(0)  # both queued
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await kept

    assert asyncio.run(main()) == "kept"
    assert ran == ["kept"]


def test_each_work_runs_in_its_own_requests_context():
    turns = WorkTurns()

    async def request(name):
        shopper.set(name)
        await asyncio.sleep(0)
        return await turns.run(shopper.get)

    async def main():
        return await asyncio.gather(*(request(n) for n in ("ana", "ben", "cy")))

    assert asyncio.run(main()) == ["ana", "ben", "cy"]


def test_work_left_queued_by_a_stopped_loop_does_not_hold_up_the_next_loop():
    turns = WorkTurns()
    first = asyncio.new_event_loop()
    stranded = first.create_task(turns.run(lambda: "never"))
    first.stop()
    first.run_forever()  # one turn: the work queued, its callback due on the next turn, which never comes
    first.close()

    async def main():
        return await asyncio.wait_for(turns.run(lambda: "answered"), 5)  # held up: TimeoutError

    assert asyncio.run(main()) == "answered"
    assert not stranded.done()  # its loop is gone: nothing could answer it
    stranded._log_destroy_pending = False

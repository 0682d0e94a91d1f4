"""Signals during a decode wait for it to end, then reach their real handlers."""

import os
import signal

import pytest

from app.llm.hidden import deferred_signals


def test_ctrl_c_inside_the_block_is_raised_when_it_ends():
    reached_the_end_of_the_block = False
    with pytest.raises(KeyboardInterrupt), deferred_signals():
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # plenty of bytecode boundaries for a handler to run at
            pass
        reached_the_end_of_the_block = True
    assert reached_the_end_of_the_block
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_custom_sigterm_handler_is_called_once_after_the_block():
    calls = []
    previous = signal.signal(signal.SIGTERM, lambda number, _frame: calls.append(number))
    try:
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
            assert calls == []
        assert calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)

"""The judge's own signals in a split run: what ends a call or a run for a reason of the judge's, never the
program's. None is an `Exception`, so test code cannot catch one as an error of the program's (sandbox.judge turns
each into the run's verdict)."""

from __future__ import annotations


class JudgeSignal(BaseException):
    """The judge's own signals. Not `Exception`s (as SystemExit is not): tests that catch `Exception` (or use
    `assertRaises(Exception)`) must not take a failure of the judge's for an error of the program's. The judge
    also records each one it raises (`Session.signals`), so that tests catching even `BaseException` cannot hide
    it: the run's verdict is the signal's (sandbox.judge), never PASSED."""

    verdict = "runtime_error"


class ChannelClosed(JudgeSignal):
    """The other process ended, or sent what is not a message."""


class NotPlainResult(JudgeSignal):
    """The solution returned something that cannot cross as a value."""

    verdict = "failed"


class RemoteError(JudgeSignal):
    """The solution ended a call with something that is not an ordinary exception, nor SystemExit or
    KeyboardInterrupt (which reach the tests as themselves)."""


class TooManyCalls(JudgeSignal):
    """The run's time is nearly up and the tests have made thousands of calls into the solution's process, each a
    round trip that plain Python (one process) does not make: the verdict says so."""

    verdict = "timeout"


class CannotJudge(JudgeSignal):
    """Something the judge needs for the tests failed in the judge itself (importing a module of the program's)."""


class CannotCross(JudgeSignal):
    """The tests handed the solution something that cannot cross, or need something of it that cannot: they must
    run beside it."""

    verdict = "retry"

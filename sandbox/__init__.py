"""Run model-written Python against unit tests, safely, and turn the outcome into a reward. No Ray in here.

Public API: Sandbox, Verdict, Result, RewardTable. Loaded lazily, so that the sandbox's own server processes
import only the small modules they need."""

__all__ = ["Result", "RewardTable", "Sandbox", "Verdict"]


def __getattr__(name: str):
    if name in __all__:
        from codealign.sandbox import core

        return getattr(core, name)
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")

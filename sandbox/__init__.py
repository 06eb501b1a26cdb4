"""Run model-written Python against unit tests, safely, and turn the outcome into a reward. No Ray in here."""

from sandbox.core import Result, RewardTable, Sandbox, Verdict

__all__ = ["Result", "RewardTable", "Sandbox", "Verdict"]

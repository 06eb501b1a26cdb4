"""Per-user directories outside the checkout, so that a job whose working directory is an uploaded copy of the
checkout (`ray job submit --working-dir .`) finds what `launch.py prepare-data` and `prepare-model` put there."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(kind: str) -> Path:
    """$XDG_CACHE_HOME/codealign/<kind>, default ~/.cache/codealign/<kind>."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "codealign" / kind


def user_data_dir() -> Path:
    """The per-user benchmark data directory that `launch.py prepare-data` fills."""
    return user_cache_dir("data")


def resolve_data_dir(configured: str | Path = "") -> Path:
    """Where the benchmark files are read from: the configured directory (data.data_dir, eval --data-dir), else
    $CODEALIGN_DATA, else the per-user data directory."""
    raw = str(configured or "") or os.environ.get("CODEALIGN_DATA", "")
    return Path(raw).expanduser() if raw else user_data_dir()

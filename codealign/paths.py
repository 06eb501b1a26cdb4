"""Per-user directories outside the checkout, so that a job whose working directory is an uploaded copy of the
checkout (`ray job submit --working-dir .`) finds what `launch.py prepare-data` and `prepare-model` put there."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir(kind: str) -> Path:
    """$XDG_CACHE_HOME/codealign/<kind>, default ~/.cache/codealign/<kind>."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "codealign" / kind

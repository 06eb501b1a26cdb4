"""Shared, session-scoped real components: one Ray cluster, one tiny-model vLLM engine, the real model path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ROOT / "configs" / "local.yaml"  # the default recipe
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Where every command reads the benchmarks from: $CODEALIGN_DATA, else the per-user data directory."""
    from codealign.exercises.loaders import resolve_data_dir

    path = resolve_data_dir()
    assert (path / "mbpp.jsonl").is_file(), (f"benchmark data not found at {path}; run `python launch.py "
                                             f"prepare-data --from DIR` (or `make setup`)")
    return path


@pytest.fixture(scope="session")
def real_model_path() -> str:
    from codealign.model_source import resolve_model

    return resolve_model("embedded:smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, real_model_path) -> str:
    from codealign.models import make_tiny_model

    return str(make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", tokenizer_from=real_model_path))


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    # Logical CPUs above the 2 real cores: the actors of a run take turns rather than compute at once.
    for attempt in range(3):  # Ray gives its raylet 30 s to start, which a loaded machine can miss
        try:
            # learner_node: a custom resource, as a cluster's learner nodes carry (train.resources_per_worker)
            ray.init(num_cpus=8, resources={"learner_node": 4}, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_generator(ray_cluster, tiny_model_path):
    from codealign.actors.generator import create_generator
    from codealign.config import GeneratorConfig, ModelConfig

    cfg = GeneratorConfig(kv_cache_gib=1, enable_lora=True, max_lora_rank=16)
    handle = create_generator(tiny_model_path, ModelConfig(max_model_len=512), cfg)
    yield handle
    ray_cluster.kill(handle)


def raw_local() -> dict:
    """The default recipe as plain YAML data, to edit in a test."""
    import yaml

    return yaml.safe_load(LOCAL.read_text())


def train_batches(cfg, model_path, storage, batches: list[list], **kw) -> list[dict]:
    """`batches` trained one after the other by one learner run (trainers/streaming.py), each published; their
    reports ({metrics, weights: the merged file, ...}). `kw`: StreamingLearner's options (pipe, sampling, ...)."""
    import ray

    from codealign.trainers.streaming import StreamingLearner

    learner = StreamingLearner(cfg, kw.pop("pipe", None), model_path, storage, **kw)
    try:
        for step, data in enumerate(batches, kw.get("start_step", 0)):  # a resumed learner goes on from start_step
            learner.submit(step, ray.put(data), None, True)
        reports = learner.wait(len(batches))
    except BaseException:
        try:
            learner.close()  # raises the run's failure again: the one `wait` raised is the one to see
        except Exception:
            pass
        raise
    learner.close()
    return reports

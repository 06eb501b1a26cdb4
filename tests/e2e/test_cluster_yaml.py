"""cluster.yaml cannot be launched here (no cloud, no GPU): it goes through Ray's own autoscaler validation, and every
actor of every cluster recipe (configs/cluster*.yaml) must ask for resources that exactly one node type offers, in
numbers the node type's max_workers can hold. The requests are computed by the same functions the actors use."""

import copy
import math
from pathlib import Path

import pytest
import yaml

from codealign.actors.executor import executor_options
from codealign.actors.generator import actor_options, tensor_parallel_bundles
from codealign.config import RunConfig, load_config
from codealign.trainers.streaming import worker_resources

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs").glob("cluster*.yaml"))


def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_own_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = cluster()
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head" and types["head"]["resources"] == {"CPU": 0}
    assert {"generator_gpu", "learner_gpu", "sandbox_cpu"} <= set(types)
    for spec in types.values():
        assert 0 <= spec["min_workers"] <= spec["max_workers"] <= prepared["max_workers"]
    assert any('-e ".[gpu]"' in cmd for cmd in prepared["setup_commands"])
    assert any("prepare-model" in cmd for cmd in prepared["setup_commands"])

    broken = copy.deepcopy(raw)
    broken["available_node_types"]["sandbox_cpu"]["resources"]["sandbox"] = 0.5  # the schema wants integers
    with pytest.raises(Exception, match="sandbox"):
        validate_config(prepare_config(broken))


def requests(cfg: RunConfig) -> dict[str, tuple[dict, int]]:
    """actor kind -> (what one actor asks Ray for, how many of them the recipe may run at once)."""
    g = cfg.generator
    if g.tensor_parallel_size > 1:
        gen = (tensor_parallel_bundles(g)[0], g.replicas * g.tensor_parallel_size)
    else:
        opts = actor_options(g)
        gen = ({"CPU": opts["num_cpus"], "GPU": opts["num_gpus"], **opts["resources"]}, g.replicas)
    ex = executor_options(cfg.executor)
    pool = cfg.executor.max_actors or cfg.executor.num_actors
    learner = {**worker_resources(cfg.train), "GPU": 1 if cfg.train.use_gpu else 0}
    return {"generator": gen,
            "executor": ({"CPU": ex["num_cpus"], **ex["resources"]}, pool),
            "learner": (learner, cfg.train.num_workers)}


def fits(node: dict, request: dict) -> int:
    """How many such actors one node of this type holds (0: none)."""
    need = {k: v for k, v in request.items() if v > 0}
    return min((math.floor(node.get(k, 0) / v) for k, v in need.items()), default=0)


EXPECTED = {"generator": "generator_gpu", "executor": "sandbox_cpu", "learner": "learner_gpu"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_actor_of_a_cluster_recipe_lands_on_its_node_type(recipe):
    cfg = load_config(recipe)
    types = cluster()["available_node_types"]
    for kind, (request, count) in requests(cfg).items():
        hosts = {name for name, spec in types.items() if fits(spec["resources"], request)}
        assert hosts == {EXPECTED[kind]}, f"{recipe.name}: {kind} asks for {request}; fits on {hosts or 'nothing'}"
        spec = types[EXPECTED[kind]]
        room = fits(spec["resources"], request) * spec["max_workers"]
        assert count <= room, f"{recipe.name}: {count} {kind} actors, room for {room} on {EXPECTED[kind]}"


def test_there_are_three_cluster_recipes_and_the_local_one_asks_for_no_custom_resource():
    assert {p.name for p in RECIPES} == {"cluster.yaml", "cluster_ppo.yaml", "cluster_distill.yaml"}
    assert {load_config(p).train.algorithm for p in RECIPES} == {"dpo", "ppo", "distill"}
    local = load_config(ROOT / "configs" / "local.yaml")
    for request, _ in requests(local).values():
        assert set(request) <= {"CPU", "GPU"}


def test_cluster_config_loads():
    cfg = load_config(ROOT / "configs" / "cluster.yaml")
    assert cfg.train.use_gpu and cfg.generator.num_gpus == 1 and cfg.ray_address == "auto"


def test_the_kuberay_rayjob_offers_the_node_types_of_cluster_yaml_and_runs_a_recipe():
    """deploy/rayjob.yaml (no copy of the RayJob CRD schema could be had offline, so its shape is checked here):
    each worker group offers exactly the resources of its cluster.yaml node type, and its entrypoint's config loads
    with its overrides."""
    import json
    import shlex

    job = yaml.safe_load((ROOT / "deploy" / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]["rayClusterSpec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    types = cluster()["available_node_types"]
    groups = {g["groupName"].replace("-", "_"): g for g in spec["workerGroupSpecs"]}
    assert set(groups) == set(types) - {"head"}
    for name, g in groups.items():
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        offered = {**json.loads(json.loads(g["rayStartParams"]["resources"])), "CPU": int(limits["cpu"])}
        if "nvidia.com/gpu" in limits:
            offered["GPU"] = int(limits["nvidia.com/gpu"])
        assert offered == types[name]["resources"], name
        assert (g["minReplicas"], g["maxReplicas"]) == (types[name]["min_workers"], types[name]["max_workers"])
    argv = shlex.split(job["spec"]["entrypoint"])
    config = ROOT / Path(argv[argv.index("--config") + 1]).relative_to("/app")
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    cfg = load_config(config, overrides)
    assert (cfg.output_dir, cfg.data.data_dir, cfg.ray_address) == ("/runs", "/data", "auto")

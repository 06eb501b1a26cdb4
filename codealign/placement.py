"""Where the driver's bookkeeping actors run."""

from __future__ import annotations


def on_driver_node() -> dict:
    """Actor options that keep a zero-resource bookkeeping actor (the replay buffer, the learner's mailbox) on the
    driver's node, the head on a cluster. Asking for no resources, it could be placed on any node
    (the cluster rehearsal saw the mailbox land on a worker node), and the autoscaler scales a worker node down as
    idle while only zero-resource actors live on it (ray-project/ray#46172), taking the actor with it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)}

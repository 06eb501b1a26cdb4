"""A vLLM engine in a Ray actor: generates completions with logprobs and takes new weights in place."""

from __future__ import annotations

import os
import time

import numpy as np

from codealign.chat import prompt_token_ids
from codealign.config import GeneratorConfig, ModelConfig
from codealign.records import Completion, GenerationRequest
from codealign.weights import to_torch


class Generator:
    """The engine. Used directly in a process, or as a Ray actor through `create_generator`."""

    def __init__(self, model_path: str, model: ModelConfig, cfg: GeneratorConfig, role: str = "student"):
        # In a Ray actor the engine must run in-process: tensors then pass straight to the worker, and
        # vLLM's own worker processes would not get the actor's CPU share.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_gib))
        from vllm import LLM

        self.role = role
        self.max_model_len = model.max_model_len
        self.llm = LLM(
            model=model_path,
            dtype=model.dtype,
            max_model_len=model.max_model_len,
            enforce_eager=True,
            seed=cfg.seed,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self.policy_version = 0
        from vllm.platforms import current_platform

        # vLLM-CPU 0.32 crashes the whole batch ("CPU Generator does not use offset") when a request with its
        # own seed has a chunked prefill; on CPU, sampling is seeded by the engine seed alone.
        self.per_request_seeds = not current_platform.is_cpu()

    def ready(self) -> dict:
        return {"role": self.role, "policy_version": self.policy_version, "max_model_len": self.max_model_len}

    def _sampling_params(self, req: GenerationRequest, prompt_len: int):
        from vllm import SamplingParams

        if req.n < 1:
            raise ValueError(f"n must be >= 1, got {req.n}")
        if req.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {req.max_tokens}")
        room = self.max_model_len - prompt_len
        return SamplingParams(
            n=req.n,
            temperature=req.temperature,
            top_p=req.top_p,
            max_tokens=min(req.max_tokens, room),
            stop=req.stop or None,
            seed=req.seed if self.per_request_seeds else None,
            logprobs=0,  # the sampled token's own logprob
        )

    def generate(self, requests: list[GenerationRequest]) -> list[list[Completion]]:
        """One list of `n` completions per request, in order. A bad request gets one error completion
        with the reason; the rest of the batch still runs."""
        results: list[list[Completion] | None] = [None] * len(requests)
        prompts, params, index = [], [], []
        for i, req in enumerate(requests):
            try:
                if not req.prompt or not req.prompt.strip():
                    raise ValueError("empty prompt")
                ids = prompt_token_ids(self.tokenizer, req.prompt, req.chat)
                if len(ids) >= self.max_model_len:
                    raise ValueError(f"prompt has {len(ids)} tokens; the context holds {self.max_model_len}")
                params.append(self._sampling_params(req, len(ids)))
                prompts.append({"prompt_token_ids": ids})
                index.append(i)
            except Exception as exc:  # noqa: BLE001 - any bad request becomes a per-request error
                results[i] = [self._error(req, str(exc))]
        if prompts:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            for i, out in zip(index, outputs):
                results[i] = [self._completion(requests[i], o) for o in out.outputs]
        return results  # type: ignore[return-value]

    def _completion(self, req: GenerationRequest, out) -> Completion:
        token_ids = list(out.token_ids)
        logprobs = []
        if out.logprobs:
            logprobs = [float(step[tok].logprob) for tok, step in zip(token_ids, out.logprobs)]
        return Completion(
            request_id=req.request_id,
            text=out.text,
            token_ids=token_ids,
            logprobs=logprobs,
            finish_reason=out.finish_reason or "stop",
            policy_version=self.policy_version,
            role=self.role,
        )

    def _error(self, req: GenerationRequest, reason: str) -> Completion:
        return Completion(req.request_id, "", [], [], "error", self.policy_version, self.role, error=reason)

    def update_weights(self, weights: dict[str, np.ndarray], version: int) -> dict:
        """Load a full set of weights in place and serve them as `version` (see codealign.weights)."""
        start = time.monotonic()
        named = list(to_torch(weights))
        self.llm.collective_rpc(lambda worker: worker.reload_weights(weights_iterator=iter(named)))
        # Cached KV blocks were computed by the old weights.
        self.llm.reset_prefix_cache()
        self.policy_version = version
        return {"policy_version": version, "seconds": time.monotonic() - start}


def create_generator(model_path: str, model: ModelConfig, cfg: GeneratorConfig, role: str = "student"):
    """A Ray actor handle running `Generator`."""
    import ray

    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": str(cfg.kv_cache_gib)}
    actor_cls = ray.remote(Generator).options(
        num_cpus=cfg.num_cpus,
        num_gpus=cfg.num_gpus,
        runtime_env={"env_vars": env},
        max_concurrency=1,
    )
    handle = actor_cls.remote(model_path, model, cfg, role)
    ray.get(handle.ready.remote())
    return handle



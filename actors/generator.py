"""A vLLM engine in a Ray actor: generates completions with logprobs and takes new weights in place."""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np

from codealign.actors.engine_fixes import repack_output_heads
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
        engine_args: dict = {}
        if cfg.enable_lora:
            engine_args.update(enable_lora=True, max_lora_rank=cfg.max_lora_rank, max_loras=1)
        if cfg.tensor_parallel_size > 1:
            engine_args["distributed_executor_backend"] = "ray"  # TP workers in the actor's placement group
        self.llm = LLM(
            model=model_path,
            dtype=model.dtype,
            max_model_len=model.max_model_len,
            enforce_eager=True,
            seed=cfg.seed,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            # the sampled tokens' log-probs under the distribution they were drawn from (after temperature and
            # top-p), not the raw model's: PPO's behaviour log-probs (trainers/scoring.py scores the same way)
            logprobs_mode="processed_logprobs",
            # JSON-schema answers without free whitespace: a weak model otherwise pads until max_tokens
            structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
            **engine_args,
        )
        self.lora_enabled = cfg.enable_lora
        self.lora_request = None
        self._param_shapes: dict[str, tuple] | None = None
        self.lora_dir = tempfile.mkdtemp(prefix="codealign-lora-")
        self.tokenizer = self.llm.get_tokenizer()
        self.policy_version = 0
        from vllm.platforms import current_platform

        # vLLM-CPU 0.32 crashes the whole batch ("CPU Generator does not use offset") when a request with its
        # own seed has a chunked prefill; on CPU, sampling is seeded by the engine seed alone.
        self.per_request_seeds = not current_platform.is_cpu()

    def ready(self) -> dict:
        return {"role": self.role, "policy_version": self.policy_version, "max_model_len": self.max_model_len}

    def reset_prefix_cache(self) -> None:
        self.llm.reset_prefix_cache()

    def _sampling_params(self, req: GenerationRequest, prompt_len: int):
        from vllm import SamplingParams

        if req.n < 1:
            raise ValueError(f"n must be >= 1, got {req.n}")
        if req.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {req.max_tokens}")
        room = self.max_model_len - prompt_len
        structured = None
        if req.json_schema is not None:  # vLLM's structured outputs: the answer parses under the schema
            from vllm.sampling_params import StructuredOutputsParams

            structured = StructuredOutputsParams(json=req.json_schema)
        return SamplingParams(
            n=req.n,
            temperature=req.temperature,
            top_p=req.top_p,
            max_tokens=min(req.max_tokens, room),
            stop=req.stop or None,
            seed=req.seed if self.per_request_seeds else None,
            logprobs=0,  # the sampled token's own logprob
            structured_outputs=structured,
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
            outputs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=self.lora_request)
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

    def score(self, sequences: list[list[int]], prompt_lens: list[int]) -> list[list[float]]:
        """The served policy's log-prob of each token of each sequence after its first `prompt_len` tokens,
        teacher-forced (temperature 1, no sampling): what the learner's forward computes on the same tokens, so the
        two can be compared (pipeline/serving.py)."""
        from vllm import SamplingParams

        # Greedy for the one token it must generate: prompt log-probs skip the sampling processors (the same
        # scores at any temperature), and a sampled token would draw from the engine's RNG, which on CPU seeds
        # every later request (per_request_seeds above): a measurement would change the samples that follow it.
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        prompts = [{"prompt_token_ids": list(seq)} for seq in sequences]
        if self.lora_enabled:
            # vLLM-CPU 0.32's LoRA logits path indexes prompt-logprob rows by request, so several requests in one
            # batch crash it (einsum size mismatch); one sequence per call keeps the mapping right.
            outputs = [self.llm.generate([p], params, use_tqdm=False, lora_request=self.lora_request)[0]
                       for p in prompts]
        else:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        scores = []
        for seq, start, out in zip(sequences, prompt_lens, outputs):
            if not 1 <= start < len(seq):
                raise ValueError(f"prompt_len {start} leaves no token to score in a sequence of {len(seq)}")
            # prompt_logprobs[i] is the distribution of token i given tokens < i (None for the first)
            scores.append([float(out.prompt_logprobs[i][seq[i]].logprob) for i in range(start, len(seq))])
        return scores

    def _error(self, req: GenerationRequest, reason: str) -> Completion:
        return Completion(req.request_id, "", [], [], "error", self.policy_version, self.role, error=reason)

    def _check_weights(self, named: list) -> None:
        """Refuse, before touching the engine, weights that do not fit the served model: a failed update must
        leave the previous version serving, never a half-loaded one."""
        if self._param_shapes is None:
            shapes = self.llm.collective_rpc(
                lambda worker: {k: tuple(v.shape) for k, v in worker.model_runner.get_model().state_dict().items()})[0]
            self._param_shapes = {}
            for k, shape in shapes.items():  # with LoRA on, an empty placeholder may share a base layer's name
                key = _canonical(k)
                if key not in self._param_shapes or 0 in self._param_shapes[key]:
                    self._param_shapes[key] = shape
        for name, tensor in named:
            key = _canonical(name)
            if key not in self._param_shapes:
                raise ValueError(f"weight {name!r} is not a parameter of the served model")
            served = self._param_shapes[key]
            if 0 in served:  # vLLM-CPU packs some weights into its own layout and leaves an empty tensor
                served = None
            # fused (q/k/v, gate/up) and vocabulary-padded tensors differ in their first dimension only
            loose = key != name.replace(".base_layer.", ".") or "embed_tokens" in key or "lm_head" in key
            if served is not None and ((tuple(tensor.shape[1:]) != served[1:]) if loose
                                       else (tuple(tensor.shape) != served)):
                raise ValueError(f"weight {name!r} has shape {tuple(tensor.shape)}; the served model has {served}")
            if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
                raise ValueError(f"weight {name!r} has NaN or infinite values")

    def update_weights(self, weights: dict[str, np.ndarray], version: int) -> dict:
        """Load a full set of weights in place and serve them as `version` (see codealign.weights)."""
        start = time.monotonic()
        named = list(to_torch(weights))
        self._check_weights(named)
        self.llm.collective_rpc(lambda worker: worker.reload_weights(weights_iterator=iter(named)))
        # a tied output head is not in the update: rebuild its packed CPU kernel from the new embeddings
        self.llm.collective_rpc(repack_output_heads)
        # Cached KV blocks were computed by the old weights; a full update replaces any adapter too.
        self.llm.reset_prefix_cache()
        if self.lora_request is not None:
            self.llm.llm_engine.remove_lora(self.lora_request.lora_int_id)
            self.lora_request = None
        self.policy_version = version
        return {"policy_version": version, "seconds": time.monotonic() - start}

    def update_lora(self, adapter: dict[str, np.ndarray], adapter_config: dict, version: int) -> dict:
        """Hot-load a LoRA adapter and serve it as `version`. A fresh adapter name and id per version: reusing
        one would let the prefix cache serve blocks computed by the previous adapter."""
        if not self.lora_enabled:
            raise RuntimeError("this generator was started without enable_lora")
        from safetensors.torch import save_file
        from vllm.lora.request import LoRARequest

        start = time.monotonic()
        path = os.path.join(self.lora_dir, f"v{version}")
        os.makedirs(path, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in to_torch(adapter)}  # bf16 again, not its uint16 bit pattern
        save_file(tensors, os.path.join(path, "adapter_model.safetensors"))
        with open(os.path.join(path, "adapter_config.json"), "w") as fh:
            json.dump(adapter_config, fh)
        request = LoRARequest(f"policy-v{version}", version + 1, path)
        if not self.llm.llm_engine.add_lora(request):  # load now, so a bad adapter fails here, not mid-batch
            raise RuntimeError(f"vLLM refused the adapter for version {version}")
        if self.lora_request is not None:
            self.llm.llm_engine.remove_lora(self.lora_request.lora_int_id)
        self.lora_request = request
        self.policy_version = version
        return {"policy_version": version, "seconds": time.monotonic() - start}


def _canonical(name: str) -> str:
    # vLLM fuses q/k/v and gate/up projections, which the checkpoint names apart, and with LoRA enabled wraps
    # layers in a `base_layer`.
    name = name.replace(".base_layer.", ".")
    for part, fused in ((".q_proj.", ".qkv_proj."), (".k_proj.", ".qkv_proj."), (".v_proj.", ".qkv_proj."),
                        (".gate_proj.", ".gate_up_proj."), (".up_proj.", ".gate_up_proj.")):
        name = name.replace(part, fused)
    return name


def tensor_parallel_bundles(cfg: GeneratorConfig) -> list[dict]:
    """One bundle per tensor-parallel rank: vLLM's Ray executor places its workers in them."""
    return [{"GPU": 1, "CPU": 1, **cfg.resources}] * cfg.tensor_parallel_size


def actor_options(cfg: GeneratorConfig, max_restarts: int = 0) -> dict:
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": str(cfg.kv_cache_gib)}
    opts = {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus, "runtime_env": {"env_vars": env},
            "max_restarts": max_restarts, "max_task_retries": 0, "resources": dict(cfg.resources)}
    if cfg.tensor_parallel_size > 1:
        # GPU clusters only: the actor holds no GPU itself; its engine's TP workers take the bundles of a
        # placement group the actor is scheduled into (the OpenRLHF layout).
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = ray.util.placement_group(tensor_parallel_bundles(cfg), strategy="PACK")
        opts.update(num_gpus=0, resources={}, scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group=group, placement_group_capture_child_tasks=True))
    return opts


def create_generator(model_path: str, model: ModelConfig, cfg: GeneratorConfig, role: str = "student"):
    """One Ray actor running `Generator` (see GeneratorGroup for replicas and crash recovery)."""
    import ray

    handle = ray.remote(Generator).options(**actor_options(cfg)).remote(model_path, model, cfg, role)
    ray.get(handle.ready.remote())
    return handle

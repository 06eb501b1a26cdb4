"""Worker-side repairs run inside the vLLM engine through `collective_rpc` (plain functions, so they pickle).

vLLM-CPU packs each linear layer's weight into a kernel-specific copy when the model is loaded
(`dispatch_cpu_unquantized_gemm`: oneDNN or AMX). An in-place reload repacks every layer it loads, but a tied output
head has no tensor of its own in the checkpoint (`lm_head` is left out, the loader re-ties it): the reload logs
"ParallelLMHead: Failed to load weights" and the head keeps the copy packed from the *first* weights, while the
embedding table under it holds the new ones. Whether that copy is stale depends on the kernel: oneDNN reorders fp32
weights (and bf16 ones on CPUs with bf16 matrix units) into its own layout, so the engine would compute its logits
with the base model's embeddings for ever. Repacking the head from its current weight after every reload makes a
reloaded engine equal a fresh one started on the same weights (tests/test_serving_fidelity.py).
"""

from __future__ import annotations


def repack_output_heads(worker) -> int:
    """Rebuild the CPU GEMM kernel of every output head from the weight it holds now; returns how many."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return 0  # GPU kernels read the weight tensor itself: nothing packed to go stale
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

    repacked = 0
    for module in worker.model_runner.get_model().modules():
        if isinstance(module, ParallelLMHead) and hasattr(module, "cpu_linear") and module.weight.numel() > 0:
            dispatch_cpu_unquantized_gemm(module, remove_weight=False)
            repacked += 1
    return repacked

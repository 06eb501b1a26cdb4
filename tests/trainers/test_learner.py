"""The learner: LoRA merge against PEFT's own, and DPO batches through its Ray Train run on the tiny model."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codealign.config import LoraConfig, TrainConfig
from codealign.trainers.modeling import load_policy, merged_state_dict
from tests.conftest import train_batches
from tests.toy_data import PAIRS


def test_merged_weights_match_peft_merge_and_unload(tiny_model_path):
    model = load_policy(tiny_model_path, TrainConfig(bf16=False, lora=LoraConfig(r=4, alpha=8)))  # fp32 arithmetic
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    ours = merged_state_dict(model, dtype=torch.float32)
    reference = model.merge_and_unload().state_dict()
    base = load_file(f"{tiny_model_path}/model.safetensors")
    assert set(ours) == set(base)  # named as the checkpoint names them (tied lm_head left out)
    changed = 0
    for name, value in ours.items():
        torch.testing.assert_close(value, reference[name], rtol=1e-5, atol=1e-6)
        changed += not torch.equal(value.to(base[name].dtype), base[name])
    assert changed > 0


def test_a_float32_checkpoint_keeps_its_precision_under_a_bf16_lora_run(tiny_model_path, tmp_path):
    """With LoRA and bf16 compute the frozen base is held in bf16, but only when the checkpoint is stored in bf16:
    an fp32 checkpoint (an earlier stage's fp32 merge) is kept in fp32, or its small update would round away."""
    from transformers import AutoModelForCausalLM

    from codealign.trainers.modeling import bf16_supported

    if not bf16_supported():
        pytest.skip("no bf16 matrix units on this CPU: the base is fp32 whatever the checkpoint")
    fp32_dir = tmp_path / "fp32"
    AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).save_pretrained(fp32_dir)
    cfg = TrainConfig(bf16=True, lora=LoraConfig(r=4, alpha=8))
    def base_dtype(path):
        model = load_policy(str(path), cfg)
        return next(p.dtype for n, p in model.named_parameters() if "q_proj.base_layer" in n)
    assert base_dtype(tiny_model_path) == torch.bfloat16  # stored bf16: held bf16
    assert base_dtype(fp32_dir) == torch.float32


def test_dpo_batches_train_and_continue_from_the_adapter(ray_cluster, tiny_model_path, tmp_path):
    cfg = TrainConfig(learning_rate=2e-3, batch_size=4, max_pairs=8, lora=LoraConfig(r=8, alpha=16))
    (m1, merged1), (m2, merged2) = [(r["metrics"], Path(r["weights"])) for r in
                                    train_batches(cfg, tiny_model_path, tmp_path / "train", [PAIRS, PAIRS])]
    assert m1["dpo/pairs"] == 8 and m1["dpo/steps"] == 2
    assert m1["dpo/loss_first"] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at the start
    assert m1["dpo/loss_last"] < m1["dpo/loss_first"]
    assert (merged1.parent / "adapter").is_dir() and (merged2.parent / "adapter").is_dir()
    # batch 2 goes on from batch 1's adapter against the frozen base: it begins where batch 1 got to
    assert m2["dpo/loss_first"] < m1["dpo/loss_first"] - 1e-3
    w1, w2 = load_file(str(merged1)), load_file(str(merged2))
    base = load_file(f"{tiny_model_path}/model.safetensors")
    assert set(w1) == set(base) and all(w1[k].dtype == torch.bfloat16 for k in w1)
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)


def test_learner_rejects_unknown_algorithms(tiny_model_path, tmp_path):
    from codealign.trainers.streaming import StreamingLearner

    with pytest.raises(ValueError, match="unknown algorithm 'nope'"):
        StreamingLearner(TrainConfig(algorithm="nope"), None, tiny_model_path, tmp_path)


def test_two_data_parallel_workers_keep_identical_weights(ray_cluster, tiny_model_path, tmp_path):
    # gloo on CPU stands in for NCCL: the same DDP all-reduce, the same agreement to check
    cfg = TrainConfig(learning_rate=2e-3, batch_size=2, num_workers=2, num_cpus_per_worker=1,
                      lora=LoraConfig(r=8, alpha=16))
    (report,) = train_batches(cfg, tiny_model_path, tmp_path / "train", [PAIRS])
    metrics = report["metrics"]
    assert metrics["dpo/workers"] == 2 and metrics["dpo/pairs"] == 4  # 8 pairs split over 2 ranks
    assert metrics["dpo/steps"] == 2 and metrics["dpo/loss_last"] < metrics["dpo/loss_first"]
    assert metrics["dpo/replica_spread"] == 0.0
    assert Path(report["weights"]).is_file()


def test_nan_loss_stops_the_batch_with_a_clear_error(ray_cluster, tiny_model_path, tmp_path):
    from codealign.trainers.streaming import TrainingFailed

    cfg = TrainConfig(learning_rate=1e30, batch_size=1, lora=LoraConfig(r=8, alpha=16))  # diverges at once
    with pytest.raises(TrainingFailed, match="loss is (nan|inf)"):
        train_batches(cfg, tiny_model_path, tmp_path / "train", [PAIRS])
    assert not list((tmp_path / "train").glob("stream/v*"))  # nothing half-written published


@pytest.mark.parametrize("reference", ["frozen", "refreshed"])
def test_full_fine_tuning_continues_across_batches_against_the_chosen_reference(ray_cluster, tiny_model_path,
                                                                               tmp_path, reference):
    cfg = TrainConfig(learning_rate=1e-3, batch_size=4, max_pairs=8, reference=reference,
                      lora=LoraConfig(enabled=False))
    m1, m2 = [r["metrics"] for r in train_batches(cfg, tiny_model_path, tmp_path / "train", [PAIRS, PAIRS])]
    assert m1["dpo/loss_last"] < m1["dpo/loss_first"]
    if reference == "frozen":  # batch 2 starts from batch 1's weights, still measured against the base
        assert m2["dpo/loss_first"] < m1["dpo/loss_first"] - 1e-3
    else:  # the reference moved with the policy: batch 2 starts at policy == reference again
        assert m2["dpo/loss_first"] == pytest.approx(0.6931, abs=1e-3)

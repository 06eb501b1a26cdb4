"""Our DPO arithmetic against TRL's DPOTrainer on the very same batch (tiny random models, real TRL)."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from codealign.trainers.losses import dpo_loss, sequence_logps


@pytest.fixture(scope="module")
def trl_setup(tiny_model_path, tmp_path_factory):
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    with torch.no_grad():  # make the reference differ so the log-ratios are not zero
        for p in reference.parameters():
            p.add_(0.02 * torch.randn_like(p))
    data = Dataset.from_list([
        {"prompt": "def add(a, b):", "chosen": "\n    return a + b", "rejected": "\n    return a - b - 1"},
        {"prompt": "Reverse a list.", "chosen": " xs[::-1]", "rejected": " sorted(xs) or xs"},
    ])
    out_dir = tmp_path_factory.mktemp("trl")

    def make(loss_type: str | list[str], beta: float, **extra):
        args = DPOConfig(output_dir=str(out_dir), beta=beta, loss_type=loss_type, per_device_train_batch_size=2,
                         report_to=[], use_cpu=True, bf16=False, precompute_ref_log_probs=False, logging_steps=1,
                         **extra)
        trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=data,
                             processing_class=tokenizer)
        batch = next(iter(trainer.get_train_dataloader()))
        return trainer, batch

    return make, policy, reference


def our_logps(model, batch):
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["input_ids"][:, 1:]
    mask = batch["completion_mask"][:, 1:].float()
    return sequence_logps(logits, labels, mask), mask.sum(dim=1)


@pytest.mark.parametrize("loss_type, beta", [("sigmoid", 0.1), ("sigmoid", 0.5), ("ipo", 0.1), ("hinge", 0.1)])
def test_dpo_loss_matches_trl(trl_setup, loss_type, beta):
    make, policy, reference = trl_setup
    trainer, batch = make(loss_type, beta)
    policy.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(policy, batch).item()
        logps, lengths = our_logps(policy, batch)
        ref_logps, _ = our_logps(reference, batch)
    c, r = logps.chunk(2)
    rc, rr = ref_logps.chunk(2)
    lc, lr = lengths.chunk(2)
    ours = dpo_loss(c, r, rc, rr, beta, loss_type, chosen_lengths=lc, rejected_lengths=lr)
    assert ours.loss.item() == pytest.approx(trl_loss, rel=1e-4, abs=1e-6)
    assert abs(trl_loss - (0.6931 if loss_type == "sigmoid" else 0)) > 1e-5  # the check is not vacuous


@pytest.mark.parametrize("loss_type, smoothing, rpo_alpha", [("robust", 0.2, 0.0), ("sigmoid", 0.0, 0.5),
                                                             ("robust", 0.1, 1.0)])
def test_label_smoothing_and_rpo_match_trl(trl_setup, loss_type, smoothing, rpo_alpha):
    """Robust and conservative DPO with label smoothing, and RPO's NLL term (TRL: loss_type [.., "sft"] weighted
    by rpo_alpha), against TRL on the same tensors."""
    make, policy, reference = trl_setup
    extra = {"loss_type": [loss_type, "sft"], "loss_weights": [1.0, rpo_alpha]} if rpo_alpha else {}
    trainer, batch = make(extra.pop("loss_type", loss_type), 0.1, label_smoothing=smoothing, **extra)
    policy.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(policy, batch).item()
        logps, lengths = our_logps(policy, batch)
        ref_logps, _ = our_logps(reference, batch)
    (c, r), (rc, rr), (lc, lr) = logps.chunk(2), ref_logps.chunk(2), lengths.chunk(2)
    ours = dpo_loss(c, r, rc, rr, 0.1, loss_type, smoothing, chosen_lengths=lc, rejected_lengths=lr,
                    rpo_alpha=rpo_alpha)
    assert ours.loss.item() == pytest.approx(trl_loss, rel=1e-4, abs=1e-6)
    plain = dpo_loss(c, r, rc, rr, 0.1, "sigmoid").loss.item()
    assert abs(trl_loss - plain) > 1e-3  # smoothing / the NLL term changed the loss: the check is not vacuous


def test_conservative_dpo_is_the_cdpo_formula():
    # TRL 1.16's sigmoid loss no longer reads label_smoothing, so conservative DPO is checked on its definition
    c, r, rc, rr = torch.tensor([-3.0]), torch.tensor([-5.0]), torch.tensor([-4.0]), torch.tensor([-4.5])
    d = 0.5 * ((c - rc) - (r - rr))
    expected = -(0.8 * torch.nn.functional.logsigmoid(d) + 0.2 * torch.nn.functional.logsigmoid(-d))
    torch.testing.assert_close(dpo_loss(c, r, rc, rr, 0.5, "sigmoid", 0.2).loss, expected.mean())


def test_unknown_loss_type_is_named():
    t = torch.zeros(1)
    with pytest.raises(ValueError, match="unknown DPO loss_type 'nope'"):
        dpo_loss(t, t, t, t, 0.1, "nope")


def test_clipped_policy_loss_matches_trl_grpo(tiny_model_path, tmp_path):
    """Our PPO objective (clipped surrogate + k3 KL, token mean) against TRL GRPOTrainer's loss_type="grpo" on
    the same completions, old and reference log-probs, and advantages (TRL 1.16 has no PPOTrainer)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from codealign.trainers.losses import clipped_policy_loss

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    policy = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    args = GRPOConfig(output_dir=str(tmp_path), beta=0.05, epsilon=0.2, loss_type="grpo", use_cpu=True, bf16=False,
                      per_device_train_batch_size=2, num_generations=2, report_to=[], epsilon_high=0.3,
                      max_completion_length=16)
    trainer = GRPOTrainer(model=policy, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
                          train_dataset=Dataset.from_list([{"prompt": "def f(x):"}] * 2), processing_class=tokenizer)
    trainer.current_gradient_accumulation_steps = 1
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(10, 1000, (1, 6), generator=g)
    completion = torch.randint(10, 1000, (1, 9), generator=g)
    policy.eval()
    with torch.no_grad():
        logits = policy(input_ids=torch.cat([prompt, completion], 1)).logits[:, prompt.shape[1] - 1 : -1]
        logps = torch.log_softmax(logits, -1).gather(2, completion.unsqueeze(-1)).squeeze(-1)[0]
    old = logps + 0.3 * torch.randn(9, generator=g)  # off-policy enough that some ratios clip
    ref = logps + 0.2 * torch.randn(9, generator=g)
    for advantage in (1.5, -0.7):
        inputs = {"prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt), "completion_ids": completion,
                  "completion_mask": torch.ones_like(completion), "advantages": torch.tensor([advantage]),
                  "old_per_token_logps": old.unsqueeze(0), "ref_per_token_logps": ref.unsqueeze(0)}
        with torch.no_grad():
            trl_loss = trainer._compute_loss(policy, inputs).item()
        ours = clipped_policy_loss(logps, old, ref, advantage, clip_eps=0.2, kl_coef=0.05, clip_eps_high=0.3)
        assert ours.loss.item() == pytest.approx(trl_loss, rel=1e-4, abs=1e-6)
        symmetric = clipped_policy_loss(logps, old, ref, advantage, clip_eps=0.2, kl_coef=0.05)
        if advantage > 0:  # clip-higher changes the loss where a positive advantage's ratio passes 1.2
            assert symmetric.loss.item() != pytest.approx(trl_loss, rel=1e-4)
        # Dr. GRPO: the token sum over a constant (TRL's max_completion_length)
        trainer.loss_type = "dr_grpo"
        with torch.no_grad():
            dr = trainer._compute_loss(policy, inputs).item()
        trainer.loss_type = "grpo"
        ours_dr = clipped_policy_loss(logps, old, ref, advantage, 0.2, 0.05, clip_eps_high=0.3, normaliser=16)
        assert ours_dr.loss.item() == pytest.approx(dr, rel=1e-4, abs=1e-6)

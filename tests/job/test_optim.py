"""The reference optimisers against transcriptions of their update rules, the schedules, the
gradient scale and the divergence stop of a training step."""

import copy
import math

import pytest
import torch

from suite.job.optim import BertAdam, TempMeAdamW, make_optimizer, parameter_groups


def tempme_adamw_reference(p, grads, lr, wd, betas=(0.9, 0.999), eps=1e-6):
    """LunarShen/TempMe@e624930 tvr/models/optimization_adamw.py, AdamW.step, lines 159-187:
    ``exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)``; ``exp_avg_sq.mul_(beta2).addcmul_(grad,
    grad, value=1 - beta2)``; ``denom = exp_avg_sq.sqrt().add_(eps)``; ``step_size = lr *
    sqrt(1 - beta2**step) / (1 - beta1**step)``; ``p.addcdiv_(exp_avg, denom, value=-step_size)``;
    then ``p.add_(p, alpha=-lr * weight_decay)``."""
    p = p.clone()
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    for step, g in enumerate(grads, 1):
        m = m * betas[0] + (1 - betas[0]) * g
        v = v * betas[1] + (1 - betas[1]) * g * g
        size = lr * math.sqrt(1 - betas[1] ** step) / (1 - betas[0] ** step)
        p = p - size * m / (v.sqrt() + eps)
        p = p - lr * wd * p
    return p


def bertadam_reference(p, grads, lrs, wd, betas=(0.9, 0.98), eps=1e-6, max_norm=1.0):
    """ArrowLuo/CLIP4Clip@508ffa3 modules/optimization.py, BertAdam.step: per-parameter
    ``clip_grad_norm_(p, max_grad_norm)``; ``next_m``/``next_v`` without bias correction;
    ``update = next_m / (next_v.sqrt() + e)``; ``update += weight_decay * p.data``;
    ``p.data.add_(-lr_scheduled * update)``."""
    p = p.clone()
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    for g, lr in zip(grads, lrs, strict=True):
        norm = g.norm()
        g = g * min(1.0, max_norm / (float(norm) + 1e-6))
        m = m * betas[0] + (1 - betas[0]) * g
        v = v * betas[1] + (1 - betas[1]) * g * g
        update = m / (v.sqrt() + eps) + wd * p
        p = p - lr * update
    return p


def warmup_cosine_reference(x, warmup):
    """CLIP4Clip modules/optimization.py ``warmup_cosine``."""
    return x / warmup if x < warmup else 0.5 * (1.0 + math.cos(math.pi * x))


def run_steps(optimizer_cls, p0, grads, scheduler_factory=None, **kwargs):
    p = torch.nn.Parameter(p0.clone())
    optimizer = optimizer_cls([p], **kwargs)
    scheduler = scheduler_factory(optimizer) if scheduler_factory else None
    for g in grads:
        p.grad = g.clone()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return p.detach()


def random_problem(seed=0, steps=12):
    generator = torch.Generator().manual_seed(seed)
    p0 = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    grads = [torch.randn(5, 7, generator=generator, dtype=torch.float64) * 10 ** (i % 3 - 2)
             for i in range(steps)]
    return p0, grads


def test_tempme_adamw_equals_the_official_update_and_differs_from_torch():
    p0, grads = random_problem()
    ours = run_steps(TempMeAdamW, p0, grads, lr=1e-3, weight_decay=0.2)
    torch.testing.assert_close(ours, tempme_adamw_reference(p0, grads, 1e-3, 0.2),
                               rtol=1e-13, atol=1e-15)
    torch_adamw = run_steps(torch.optim.AdamW, p0, grads, lr=1e-3, weight_decay=0.2, eps=1e-6)
    step = (tempme_adamw_reference(p0, grads[:1], 1e-3, 0.2) - p0).abs().max()
    assert (torch_adamw - ours).abs().max() > 0.01 * step  # really another update rule


def test_bertadam_with_its_schedule_equals_clip4clip():
    from suite.job.optim import warmup_cosine_schedule

    p0, grads = random_problem(1)
    total, warmup, lr = len(grads), 0.1, 1e-3
    ours = run_steps(BertAdam, p0, grads, lambda o: warmup_cosine_schedule(o, warmup, total),
                     lr=lr, weight_decay=0.2)
    lrs = [lr * warmup_cosine_reference(step / total, warmup) for step in range(total)]
    torch.testing.assert_close(ours, bertadam_reference(p0, grads, lrs, 0.2), rtol=1e-12,
                               atol=1e-14)


def test_parameter_groups_follow_each_no_decay_rule():
    named = [("clip.visual.conv1.weight", torch.nn.Parameter(torch.zeros(2, 2))),
             ("clip.ln_pre.weight", torch.nn.Parameter(torch.zeros(2))),
             ("clip.ln_pre.bias", torch.nn.Parameter(torch.zeros(2))),
             ("clip.visual.class_embedding", torch.nn.Parameter(torch.zeros(2)))]
    decayed = {rule: {id(p) for g in parameter_groups(named, 1e-3, 0.2, rule)
                      if g["weight_decay"] > 0 for p in g["params"]}
               for rule in ("1d", "bias", "none")}
    ids = {name: id(p) for name, p in named}
    assert decayed["1d"] == {ids["clip.visual.conv1.weight"]}
    # CLIP4Clip's list names "LayerNorm": CLIP's ln_* and class embedding are decayed.
    assert decayed["bias"] == set(ids.values()) - {ids["clip.ln_pre.bias"]}
    assert decayed["none"] == set(ids.values())


@pytest.mark.parametrize("name", ["adamw", "tempme-adamw", "bertadam"])
def test_make_optimizer_builds_each_with_its_schedule(name):
    p = torch.nn.Parameter(torch.zeros(3, 3))
    optimizer, scheduler = make_optimizer([{"params": [p], "lr": 1.0, "weight_decay": 0.0}],
                                          name, 0.1, 100)
    lrs = []
    for _ in range(100):
        lrs.append(scheduler.get_last_lr()[0])
        p.grad = torch.ones_like(p)
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(1.0, abs=0.03) and lrs[-1] < 0.01


def tiny_trainer(tiny_clip, **train):
    from methods.registry import get
    from suite.data.cards import load_card
    from suite.job.config import apply_overrides, base_for
    from suite.job.engine import Trainer
    from suite.models.backbone import Backbone

    config = apply_overrides(base_for("lora", "synthetic"),
                             {f"train.{k}": v for k, v in train.items()})
    method = get("lora")
    tiny_clip = copy.deepcopy(tiny_clip)
    torch.manual_seed(0)  # the same LoRA initialisation every time
    model = method.build(tiny_clip, method.make_config("tiny-clip", 12, {}), 12, "tiny-clip")
    import open_clip

    backbone = Backbone("tiny-clip", None, tiny_clip, open_clip.get_tokenizer("tiny-clip"), 48,
                        (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    return Trainer(model, config, load_card("synthetic"), backbone, torch.device("cpu"), False)


class Recorder:
    """Stands in for an optimiser: keeps the gradients it was asked to apply."""

    def __init__(self, params):
        self.params, self.grads = params, []

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def step(self):
        self.grads.append([p.grad.clone() for p in self.params])


class NoSchedule:
    def step(self):
        pass


def batch(trainer):
    torch.manual_seed(0)
    ids = trainer.tokenize(["a red square", "a blue circle", "a green star", "a big dot"])
    return ids, torch.randint(0, 255, (4, 12, 48, 48, 3), dtype=torch.uint8), torch.ones(
        4, 12, dtype=torch.bool)


@pytest.mark.slow
def test_the_gradient_applied_is_the_true_one_divided_by_grad_divisor(tiny_clip):
    """The official runs' effective gradient (true / 4) as a setting, before clipping."""
    from suite.cost.device import grad_scaler

    grads = {}
    for divisor in (1.0, 4.0):
        trainer = tiny_trainer(tiny_clip, grad_divisor=divisor, grad_clip=1e9)
        params = trainer.model.trainable_parameters()
        recorder = Recorder(params)
        trainer.train_step(*batch(trainer), recorder, grad_scaler(trainer.device, "fp32"),
                           NoSchedule(), params)
        grads[divisor] = recorder.grads[0]
    for whole, quarter in zip(grads[1.0], grads[4.0], strict=True):
        torch.testing.assert_close(quarter * 4, whole, rtol=1e-5, atol=1e-8)
    assert any(g.abs().max() > 0 for g in grads[1.0])


def test_a_non_finite_loss_stops_training(tiny_clip, monkeypatch):
    from suite.cost.device import grad_scaler
    from suite.errors import TrainingDiverged

    trainer = tiny_trainer(tiny_clip)
    params = trainer.model.trainable_parameters()
    recorder = Recorder(params)
    monkeypatch.setattr(trainer, "loss", lambda *a: torch.tensor(float("nan")))
    with pytest.raises(TrainingDiverged, match="the loss is nan"):
        trainer.train_step(*batch(trainer), recorder, grad_scaler(trainer.device, "fp32"),
                           NoSchedule(), params)
    assert recorder.grads == []  # nothing was applied

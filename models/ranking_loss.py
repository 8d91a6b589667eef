"""The ranker's training loss (`RankingLoss`), its parameter groups and one training step.

Adversarial training (DSN) without a second backward pass: `RankingLoss` returns
`loss_gen_adv` computed through a frozen copy of the discriminator's parameters (so it moves
only the generator and the ID embeddings) and `loss_disc` computed on detached inputs (so it
moves only the discriminator). The two players' objectives touch disjoint parameters, so
`loss` = task losses + adversarial_weight * loss_gen_adv + loss_disc can be backpropagated once
and stepped with one optimizer, or with two (`ranking_parameter_groups`, `train_step`) when
the discriminator needs its own learning rate.

Sparse labels (share, comment, cart, favorite): two levers in the config. `pos_weight`
(BCEWithLogits pos_weight, set by training from the data's label rates) upweights a task's
rare positives inside its own loss, so its tower does not collapse to "never"; `task_weights`
sets each task's share of the total. pos_weight != 1 shifts that task's probabilities upward
(they are no longer calibrated); ranking order within a task is what it is trained for. Label
masks leave undefined labels out (e.g. watch for shop pages).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.layers import check_tensor
from models.ranking import RankingModel
from models.ranking_tensors import CandidateInputs, UserInputs


class RankingLoss(nn.Module):
    """Training wrapper: masked, pos-weighted BCE per task plus the DSN adversarial losses.

    forward(user, candidates, labels, label_masks) returns:
        "loss": scalar to backpropagate = loss_tasks + adversarial_weight * loss_gen_adv
            + loss_disc (the last two only with use_dsn);
        "loss_tasks": sum over tasks of task_weight * loss_{task};
        "loss_{task}": mean BCE over the task's unmasked rows (0 when none);
        "loss_gen_adv", "loss_disc": the generator's and discriminator's losses (use_dsn);
        "logits_{task}": the model's logits.
    Everything except "loss" is detached, for logging.
    """

    def __init__(self, model: RankingModel) -> None:
        super().__init__()
        self.model = model
        c = model.config
        self.register_buffer(
            "pos_weight",
            torch.tensor([c.pos_weight.get(t, 1.0) for t in c.tasks]),
            persistent=False,
        )
        self.task_weights = [c.task_weights.get(t, 1.0) for t in c.tasks]

    def dsn_losses(self, out: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(loss_gen_adv, loss_disc) from a forward output with DSN internals.

        loss_gen_adv: BCE(D(fake), real) through frozen discriminator parameters; moves the
            generators (and through them the ID embeddings).
        loss_disc: BCE(D(real), real) + BCE(D(fake), fake) on detached inputs, halved; moves
            only the discriminators. Both are averaged over the content modalities.
        """
        dsn = self.model.dsn
        if dsn is None:
            raise ValueError("dsn_losses needs a model built with use_dsn=True")
        condition = out["dsn_condition"].detach()
        gen, disc = [], []
        for m in self.model.config.content_modalities:
            real, fake = out[f"dsn_real_{m}"], out[f"dsn_fake_{m}"]
            fooled = dsn.discriminate(m, condition, fake, frozen=True)
            gen.append(F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled)))
            on_real = dsn.discriminate(m, condition, real.detach())
            on_fake = dsn.discriminate(m, condition, fake.detach())
            disc.append(
                0.5 * F.binary_cross_entropy_with_logits(on_real, torch.ones_like(on_real))
                + 0.5 * F.binary_cross_entropy_with_logits(on_fake, torch.zeros_like(on_fake))
            )
        return torch.stack(gen).mean(), torch.stack(disc).mean()

    def forward(
        self,
        user: UserInputs,
        items: CandidateInputs,
        labels: dict[str, Tensor],
        label_masks: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """
        Args:
            user, items: model inputs (see `RankingModel`).
            labels: {task: (N,) float in [0, 1]} for every task in the config; soft targets
                are allowed (e.g. watch ratio).
            label_masks: optional {task: (N,) bool}, True = the label is defined for the row.
                Tasks without a mask use every row.
        """
        c = self.model.config
        label_masks = label_masks or {}
        missing = [t for t in c.tasks if t not in labels]
        if missing:
            raise ValueError(f"labels lack tasks {missing}; give every task in config.tasks")
        unknown = set(label_masks) - set(c.tasks)
        if unknown:
            raise ValueError(f"label_masks name unknown tasks {sorted(unknown)}")
        out = self.model(user, items)
        n = items.item_id.shape[0]
        losses: dict[str, Tensor] = {}
        loss_tasks = out[f"logits_{c.tasks[0]}"].new_zeros(())
        for i, task in enumerate(c.tasks):
            target = check_tensor(f"labels[{task!r}]", labels[task], (n,), kind="float")
            per_row = F.binary_cross_entropy_with_logits(
                out[f"logits_{task}"], target, pos_weight=self.pos_weight[i], reduction="none"
            )
            mask = label_masks.get(task)
            if mask is None:
                task_loss = per_row.mean()
            else:
                check_tensor(f"label_masks[{task!r}]", mask, (n,), kind="bool")
                weights = mask.to(per_row.dtype)
                task_loss = (per_row * weights).sum() / weights.sum().clamp(min=1.0)
            losses[f"loss_{task}"] = task_loss
            loss_tasks = loss_tasks + self.task_weights[i] * task_loss
        loss = loss_tasks
        if self.model.dsn is not None:
            loss_gen_adv, loss_disc = self.dsn_losses(out)
            losses["loss_gen_adv"], losses["loss_disc"] = loss_gen_adv, loss_disc
            loss = loss + c.adversarial_weight * loss_gen_adv + loss_disc
        result = {name: value.detach() for name, value in losses.items()}
        result.update({k: v.detach() for k, v in out.items() if k.startswith("logits_")})
        result["loss_tasks"] = loss_tasks.detach()
        result["loss"] = loss
        return result


def ranking_parameter_groups(
    model: RankingModel, lr: float
) -> tuple[list[dict[str, Any]], list[nn.Parameter]]:
    """(the ranker's Adam parameter groups at learning rate `lr`, the discriminators'
    parameters), for two optimizers in `train_step`. With slow_item_ids the item-ID table is a
    group of its own at lr * item_id_lr_scale; the first group is always the rest's."""
    slow = list(model.item_id_embedding.parameters()) if model.config.slow_item_ids else []
    apart = {id(p) for p in [*model.discriminator_parameters(), *slow]}
    rest = [p for p in model.parameters() if id(p) not in apart]
    groups: list[dict[str, Any]] = [{"params": rest, "lr": lr}]
    if slow:
        groups.append({"params": slow, "lr": lr * model.config.item_id_lr_scale})
    return groups, list(model.discriminator_parameters())


def train_step(
    loss_fn: RankingLoss,
    user: UserInputs,
    items: CandidateInputs,
    labels: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    disc_optimizer: torch.optim.Optimizer | None = None,
    label_masks: dict[str, Tensor] | None = None,
) -> dict[str, float]:
    """One step of the ranker and (with use_dsn) the adversarial game.

    One backward pass suffices because the generator's and the discriminator's losses touch
    disjoint parameters (see the module docstring). With `disc_optimizer`, `optimizer` holds
    the ranker parameters and `disc_optimizer` the discriminators' (`ranking_parameter_groups`);
    without it, `optimizer` holds all of them.

    Returns:
        every loss in the wrapper's output, as floats.
    """
    optimizers = [optimizer] + ([disc_optimizer] if disc_optimizer is not None else [])
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    losses = loss_fn(user, items, labels, label_masks)
    losses["loss"].backward()
    for opt in optimizers:
        opt.step()
    return {k: float(v.detach()) for k, v in losses.items() if k.startswith("loss")}

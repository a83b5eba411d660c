"""Hungarian matching of predicted masks to target masks (bipartite, one query per target).

The cost of assigning query ``q`` to target ``t`` is

    C[q, t] = cost_mask * focal(q, t) + cost_class * (-p_q(class_t)) + cost_dice * dice(q, t)

where the focal and dice terms compare the query's mask logits with the target mask resized to the
prediction resolution. Target pixels whose value is neither 0 nor 1 (e.g. 255 for padding or
"ignore" regions) take no part in the focal and dice costs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
# Stand-in for NaN/inf costs: large enough to never be chosen over a real cost, small enough that
# scipy's float64 potentials stay finite.
INVALID_COST = 1e12
# Value given to target pixels that take no part in the mask terms (padding, ignored regions).
PADDED_TARGET_VALUE = 255.0


def split_valid_targets(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split target masks with the ignore convention into (binary mask, valid-pixel mask).

    Args:
        masks: `(..., pixels)` float tensor: 1 = in the mask, 0 = not in it, anything else ignored.

    Returns:
        `(binary, valid)`, both float tensors of the input's shape: `binary` is 1 where the target
        is 1, `valid` is 1 where the target is 0 or 1.
    """
    binary = (masks == 1).to(masks.dtype)
    valid = ((masks == 0) | (masks == 1)).to(masks.dtype)
    return binary, valid


def check_loss_inputs(
    masks_queries_logits: torch.Tensor,
    class_queries_logits: torch.Tensor,
    mask_labels: Sequence[torch.Tensor],
    class_labels: Sequence[torch.Tensor],
) -> None:
    """Raise ``ValueError`` unless the logits are ``(batch, queries, height, width)`` and
    ``(batch, queries, num_labels + 1)`` and the label lists hold, per image, ``(n_i, H_i, W_i)``
    masks and ``(n_i,)`` classes."""
    if masks_queries_logits.ndim != 4:
        raise ValueError(
            "masks_queries_logits must have shape (batch, queries, height, width), got "
            f"{tuple(masks_queries_logits.shape)}"
        )
    if class_queries_logits.ndim != 3:
        raise ValueError(
            "class_queries_logits must have shape (batch, queries, num_labels + 1), got "
            f"{tuple(class_queries_logits.shape)}"
        )
    batch = masks_queries_logits.shape[0]
    if len(mask_labels) != batch or len(class_labels) != batch:
        raise ValueError(
            f"mask_labels and class_labels must hold one entry per image ({batch}), got "
            f"{len(mask_labels)} and {len(class_labels)}"
        )
    for index, (masks, labels) in enumerate(zip(mask_labels, class_labels)):
        if masks.ndim != 3 or labels.ndim != 1 or masks.shape[0] != labels.shape[0]:
            raise ValueError(
                f"mask_labels[{index}] must be (num_targets, height, width) and class_labels[{index}] "
                f"(num_targets,), got {tuple(masks.shape)} and {tuple(labels.shape)}"
            )


class MaskFormerHungarianMatcher(nn.Module):
    """Assigns each target mask of an image to one query by minimising the total matching cost.

    Args:
        cost_class: weight of the classification cost (minus the softmax probability of the class).
        cost_mask: weight of the sigmoid focal cost between mask logits and target masks.
        cost_dice: weight of the dice cost.
    """

    def __init__(self, cost_class: float = 1.0, cost_mask: float = 1.0, cost_dice: float = 1.0):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError(
                "All costs cant be 0: at least one of cost_class, cost_mask, cost_dice"
            )
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice

    @torch.no_grad()
    def compute_cost_matrices(
        self,
        masks_queries_logits: torch.Tensor,
        class_queries_logits: torch.Tensor,
        mask_labels: Sequence[torch.Tensor],
        class_labels: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """Matching costs of every query against every target of its image.

        Args:
            masks_queries_logits: `(batch, queries, height, width)` mask logits.
            class_queries_logits: `(batch, queries, num_labels + 1)` class logits.
            mask_labels: per image `(num_targets_i, H_i, W_i)` target masks (any dtype).
            class_labels: per image `(num_targets_i,)` int64 class indices.

        Returns:
            `(batch, queries, max_targets)` float32 costs; columns beyond an image's own target
            count are padding and meaningless.
        """
        batch, num_queries, height, width = masks_queries_logits.shape
        device = masks_queries_logits.device
        max_targets = max((int(labels.shape[0]) for labels in class_labels), default=0)
        if max_targets == 0:
            return masks_queries_logits.new_zeros((batch, num_queries, 0), dtype=torch.float32)

        # Targets at the prediction resolution, padded with ignored masks to max_targets per image.
        targets = torch.full(
            (batch, max_targets, height * width),
            PADDED_TARGET_VALUE,
            dtype=torch.float32,
            device=device,
        )
        labels = torch.zeros((batch, max_targets), dtype=torch.int64, device=device)
        for index, (masks, classes) in enumerate(zip(mask_labels, class_labels)):
            count = masks.shape[0]
            if count == 0:
                continue
            resized = F.interpolate(
                masks[:, None].to(device=device, dtype=torch.float32),
                size=(height, width),
                mode="nearest",
            )
            targets[index, :count] = resized.flatten(1)
            labels[index, :count] = classes.to(device)
        binary, valid = split_valid_targets(targets)
        valid_count = valid.sum(-1).clamp_min(1.0)[:, None, :]  # (batch, 1, max_targets)

        probs = class_queries_logits.float().softmax(-1)
        class_cost = -probs.gather(2, labels[:, None, :].expand(-1, num_queries, -1))

        logits = masks_queries_logits.float().flatten(2)  # (batch, queries, pixels)
        positive = F.binary_cross_entropy_with_logits(
            logits, torch.ones_like(logits), reduction="none"
        )
        negative = F.binary_cross_entropy_with_logits(
            logits, torch.zeros_like(logits), reduction="none"
        )
        mask_probs = logits.sigmoid()
        positive = FOCAL_ALPHA * (1 - mask_probs) ** FOCAL_GAMMA * positive
        negative = (1 - FOCAL_ALPHA) * mask_probs**FOCAL_GAMMA * negative
        focal_cost = (
            torch.bmm(positive, binary.transpose(1, 2))
            + torch.bmm(negative, (valid - binary).transpose(1, 2))
        ) / valid_count

        overlap = torch.bmm(mask_probs, binary.transpose(1, 2))
        prob_mass = torch.bmm(mask_probs, valid.transpose(1, 2))
        target_mass = binary.sum(-1)[:, None, :]
        dice_cost = 1 - (2 * overlap + 1) / (prob_mass + target_mass + 1)

        return (
            self.cost_mask * focal_cost + self.cost_class * class_cost + self.cost_dice * dice_cost
        )

    @torch.no_grad()
    def forward(
        self,
        masks_queries_logits: torch.Tensor,
        class_queries_logits: torch.Tensor,
        mask_labels: Sequence[torch.Tensor],
        class_labels: Sequence[torch.Tensor],
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match queries to targets, image by image.

        Args:
            masks_queries_logits: `(batch, queries, height, width)` mask logits.
            class_queries_logits: `(batch, queries, num_labels + 1)` class logits.
            mask_labels: per image `(num_targets_i, H_i, W_i)` masks (1 in, 0 out, other = ignored).
            class_labels: per image `(num_targets_i,)` int64 class indices.

        Returns:
            Per image `(query_indices, target_indices)`, two int64 CPU tensors of length
            `min(queries, num_targets_i)`.
        """
        check_loss_inputs(masks_queries_logits, class_queries_logits, mask_labels, class_labels)
        with torch.autocast(masks_queries_logits.device.type, enabled=False):
            costs = self.compute_cost_matrices(
                masks_queries_logits, class_queries_logits, mask_labels, class_labels
            )
        costs = torch.nan_to_num(costs, nan=INVALID_COST, posinf=INVALID_COST, neginf=-INVALID_COST)
        costs = costs.cpu().numpy()  # the one device-to-host transfer

        indices = []
        for image_costs, labels in zip(costs, class_labels):
            count = int(labels.shape[0])
            query_idx, target_idx = linear_sum_assignment(image_costs[:, :count])
            indices.append(
                (
                    torch.as_tensor(np.asarray(query_idx), dtype=torch.int64),
                    torch.as_tensor(np.asarray(target_idx), dtype=torch.int64),
                )
            )
        return indices

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_mask={self.cost_mask}, cost_dice={self.cost_dice}"
        )

"""The MaskFormer set-prediction loss: classification, sigmoid focal and dice on matched pairs.

For every image the matcher assigns one query to each target mask. The loss then has three
unweighted terms:

* ``loss_cross_entropy``: cross-entropy over all queries, unmatched ones supervised towards the
  no-object class (index ``num_labels``) with class weights ``empty_weight``;
* ``loss_mask``: sigmoid focal loss between matched mask logits (upsampled to the target size) and
  target masks, averaged over each mask's valid pixels, summed over masks, divided by ``num_masks``;
* ``loss_dice``: dice loss on the same pairs, summed over masks, divided by ``num_masks``.

Target pixels that are neither 0 nor 1 (e.g. 255 for padding or ignored regions) are left out of
the mask terms. ``num_masks`` is the number of targets averaged over all processes, at least 1.
The model weights the terms and sums them; this module does not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from maskformer.modeling.matcher import (
    FOCAL_ALPHA,
    FOCAL_GAMMA,
    PADDED_TARGET_VALUE,
    MaskFormerHungarianMatcher,
    check_loss_inputs,
    split_valid_targets,
)

Indices = list[tuple[torch.Tensor, torch.Tensor]]


def sigmoid_focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, num_masks: torch.Tensor
) -> torch.Tensor:
    """Sigmoid focal loss (alpha 0.25, gamma 2), averaged over valid pixels, summed over masks.

    Args:
        logits: `(masks, pixels)` mask logits.
        targets: `(masks, pixels)` binary targets.
        valid: `(masks, pixels)` 1 for pixels that count, 0 for ignored ones.
        num_masks: scalar normaliser.

    Returns:
        Scalar loss.
    """
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    probs = logits.sigmoid()
    prob_of_target = probs * targets + (1 - probs) * (1 - targets)
    loss = cross_entropy * (1 - prob_of_target) ** FOCAL_GAMMA
    alpha = FOCAL_ALPHA * targets + (1 - FOCAL_ALPHA) * (1 - targets)
    loss = alpha * loss
    per_mask = (loss * valid).sum(1) / valid.sum(1).clamp_min(1.0)
    return per_mask.sum() / num_masks


def dice_loss(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, num_masks: torch.Tensor
) -> torch.Tensor:
    """Dice loss with +1 smoothing on valid pixels, summed over masks.

    Args:
        logits: `(masks, pixels)` mask logits.
        targets: `(masks, pixels)` binary targets.
        valid: `(masks, pixels)` 1 for pixels that count, 0 for ignored ones.
        num_masks: scalar normaliser.

    Returns:
        Scalar loss.
    """
    probs = logits.sigmoid() * valid
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)
    return loss.sum() / num_masks


def _matched_query_positions(indices: Indices, device: torch.device) -> tuple[torch.Tensor, ...]:
    """`(batch_index, query_index)` of every matched query, concatenated over the batch."""
    batch_index = torch.cat(
        [torch.full_like(query, image) for image, (query, _) in enumerate(indices)]
    )
    query_index = torch.cat([query for query, _ in indices])
    return batch_index.to(device), query_index.to(device)


class MaskFormerLoss(nn.Module):
    """Computes the unweighted MaskFormer loss terms for a batch.

    Args:
        num_labels: number of real classes K (the no-object class is index K).
        matcher: the `MaskFormerHungarianMatcher` used to pair queries with targets.
        weight_dict: term weights, kept for the model that applies them (not used here).
        eos_coef: class weight of the no-object class in the cross-entropy.
    """

    def __init__(
        self,
        num_labels: int,
        matcher: MaskFormerHungarianMatcher,
        weight_dict: dict[str, float],
        eos_coef: float,
    ):
        super().__init__()
        self.num_labels = num_labels
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        empty_weight = torch.ones(num_labels + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def get_num_masks(
        self, class_labels: Sequence[torch.Tensor], device: torch.device
    ) -> torch.Tensor:
        """Target count of the batch, averaged over processes and clamped to >= 1 (scalar float32)."""
        count = sum(int(labels.shape[0]) for labels in class_labels)
        num_masks = torch.tensor(float(count), dtype=torch.float32, device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(num_masks, op=dist.ReduceOp.SUM)
            num_masks = num_masks / dist.get_world_size()
        return num_masks.clamp(min=1.0)

    def loss_labels(
        self,
        class_queries_logits: torch.Tensor,
        class_labels: Sequence[torch.Tensor],
        indices: Indices,
    ) -> dict[str, torch.Tensor]:
        """Weighted cross-entropy of all queries; unmatched queries target the no-object class.

        Args:
            class_queries_logits: `(batch, queries, num_labels + 1)` class logits.
            class_labels: per image `(num_targets_i,)` class indices.
            indices: the matcher's `(query_indices, target_indices)` per image.
        """
        logits = class_queries_logits.float()
        batch, num_queries, _ = logits.shape
        device = logits.device
        target_classes = torch.full(
            (batch, num_queries), self.num_labels, dtype=torch.int64, device=device
        )
        batch_index, query_index = _matched_query_positions(indices, device)
        matched_classes = torch.cat(
            [
                labels.to(device)[target.to(device)]
                for labels, (_, target) in zip(class_labels, indices)
            ]
        )
        target_classes[batch_index, query_index] = matched_classes.to(torch.int64)
        loss = F.cross_entropy(
            logits.transpose(1, 2), target_classes, weight=self.empty_weight.float()
        )
        return {"loss_cross_entropy": loss}

    def loss_masks(
        self,
        masks_queries_logits: torch.Tensor,
        mask_labels: Sequence[torch.Tensor],
        indices: Indices,
        num_masks: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Focal and dice losses of matched queries against their targets at the target size.

        Args:
            masks_queries_logits: `(batch, queries, height, width)` mask logits.
            mask_labels: per image `(num_targets_i, H_i, W_i)` masks (1 in, 0 out, other ignored).
            indices: the matcher's `(query_indices, target_indices)` per image.
            num_masks: scalar normaliser.
        """
        device = masks_queries_logits.device
        batch_index, query_index = _matched_query_positions(indices, device)
        matched_logits = masks_queries_logits[batch_index, query_index].float()
        if matched_logits.shape[0] == 0:
            # No targets: zero, but attached to the graph so every parameter still gets a gradient.
            zero = matched_logits.sum()
            return {"loss_mask": zero, "loss_dice": zero.clone()}

        target_height = max(int(masks.shape[-2]) for masks in mask_labels)
        target_width = max(int(masks.shape[-1]) for masks in mask_labels)
        matched_targets = []
        for masks, (_, target) in zip(mask_labels, indices):
            if target.numel() == 0:
                continue
            selected = masks.to(device)[target.to(device)].float()
            pad = (0, target_width - selected.shape[-1], 0, target_height - selected.shape[-2])
            matched_targets.append(F.pad(selected, pad, value=PADDED_TARGET_VALUE))
        targets = torch.cat(matched_targets).flatten(1)

        logits = F.interpolate(
            matched_logits[:, None],
            size=(target_height, target_width),
            mode="bilinear",
            align_corners=False,
        ).flatten(1)
        binary, valid = split_valid_targets(targets)
        return {
            "loss_mask": sigmoid_focal_loss(logits, binary, valid, num_masks),
            "loss_dice": dice_loss(logits, binary, valid, num_masks),
        }

    def _losses_of_one_set(
        self,
        masks_queries_logits: torch.Tensor,
        class_queries_logits: torch.Tensor,
        mask_labels: Sequence[torch.Tensor],
        class_labels: Sequence[torch.Tensor],
        num_masks: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        indices = self.matcher(
            masks_queries_logits, class_queries_logits, mask_labels, class_labels
        )
        losses = self.loss_masks(masks_queries_logits, mask_labels, indices, num_masks)
        losses.update(self.loss_labels(class_queries_logits, class_labels, indices))
        return losses

    def forward(
        self,
        masks_queries_logits: torch.Tensor,
        class_queries_logits: torch.Tensor,
        mask_labels: Sequence[torch.Tensor],
        class_labels: Sequence[torch.Tensor],
        auxiliary_predictions: Sequence[dict[str, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unweighted loss terms for the final predictions and each auxiliary set.

        Args:
            masks_queries_logits: `(batch, queries, height, width)` mask logits.
            class_queries_logits: `(batch, queries, num_labels + 1)` class logits.
            mask_labels: per image `(num_targets_i, H_i, W_i)` masks (1 in, 0 out, other ignored).
            class_labels: per image `(num_targets_i,)` int64 class indices.
            auxiliary_predictions: optional list of dicts with `masks_queries_logits` and
                `class_queries_logits` of intermediate decoder layers.

        Returns:
            Scalar tensors `loss_mask`, `loss_dice`, `loss_cross_entropy`, plus the same keys with
            suffix `_{i}` for auxiliary set i.
        """
        check_loss_inputs(masks_queries_logits, class_queries_logits, mask_labels, class_labels)
        device = masks_queries_logits.device
        # Losses are computed in float32 even inside a bf16/fp16 autocast region.
        with torch.autocast(device.type, enabled=False):
            num_masks = self.get_num_masks(class_labels, device)
            losses = self._losses_of_one_set(
                masks_queries_logits, class_queries_logits, mask_labels, class_labels, num_masks
            )
            for index, predictions in enumerate(auxiliary_predictions or []):
                auxiliary = self._losses_of_one_set(
                    predictions["masks_queries_logits"],
                    predictions["class_queries_logits"],
                    mask_labels,
                    class_labels,
                    num_masks,
                )
                losses.update({f"{key}_{index}": value for key, value in auxiliary.items()})
        return losses

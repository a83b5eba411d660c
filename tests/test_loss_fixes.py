"""Where the loss departs from transformers 4.34.1 on purpose: guards, ignore pixels, precision."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from maskformer.modeling.criterion import MaskFormerLoss
from maskformer.modeling.matcher import MaskFormerHungarianMatcher

NUM_LABELS = 5
WEIGHTS = {"loss_cross_entropy": 1.0, "loss_mask": 20.0, "loss_dice": 1.0}


def make_loss(eos_coef: float = 0.1) -> MaskFormerLoss:
    return MaskFormerLoss(NUM_LABELS, MaskFormerHungarianMatcher(1.0, 20.0, 1.0), WEIGHTS, eos_coef)


def random_targets(counts, size=(24, 24), seed=0):
    generator = torch.Generator().manual_seed(seed)
    masks = [(torch.rand(n, *size, generator=generator) > 0.5).float() for n in counts]
    labels = [torch.randint(0, NUM_LABELS, (n,), generator=generator) for n in counts]
    return masks, labels


def random_logits(batch, queries=8, size=(24, 24), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, queries, *size, generator=generator) * 2,
        torch.randn(batch, queries, NUM_LABELS + 1, generator=generator),
    )


def test_all_zero_costs_rejected():
    with pytest.raises(ValueError, match="costs"):
        MaskFormerHungarianMatcher(0.0, 0.0, 0.0)


class TinyHeads(nn.Module):
    """Query features -> class logits and mask logits, to check where gradients go."""

    def __init__(self, queries=8, size=(12, 12)):
        super().__init__()
        self.features = nn.Parameter(torch.randn(2, queries, 16))
        self.class_head = nn.Linear(16, NUM_LABELS + 1)
        self.mask_head = nn.Linear(16, size[0] * size[1])
        self.size = size

    def forward(self):
        masks = self.mask_head(self.features).unflatten(-1, self.size)
        return masks, self.class_head(self.features)


def test_batch_without_targets_gives_finite_loss_and_class_gradients():
    heads = TinyHeads()
    masks_logits, class_logits = heads()
    mask_labels = [torch.zeros(0, 12, 12), torch.zeros(0, 12, 12)]
    class_labels = [torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)]
    terms = make_loss()(masks_logits, class_logits, mask_labels, class_labels)
    assert all(torch.isfinite(value) for value in terms.values())
    assert terms["loss_mask"] == 0 and terms["loss_dice"] == 0
    assert terms["loss_cross_entropy"] > 0
    sum(WEIGHTS[key] * value for key, value in terms.items()).backward()
    assert heads.class_head.weight.grad.abs().sum() > 0
    # The mask head is still in the graph (DDP needs every parameter to get a gradient).
    assert heads.mask_head.weight.grad is not None
    # Every query is pushed towards no-object: its logit gradient is negative.
    assert (heads.class_head.bias.grad[-1] < 0).item()


def test_image_without_targets_next_to_one_with_targets():
    masks_logits, class_logits = random_logits(2)
    mask_labels, class_labels = random_targets((0, 3))
    terms = make_loss()(masks_logits, class_logits, mask_labels, class_labels)
    assert all(torch.isfinite(value) for value in terms.values())
    assert terms["loss_mask"] > 0


def test_reference_gives_nan_without_targets(hf):
    """Documents the bug fixed above (transformers 4.34.1 divides by num_masks = 0)."""
    from transformers.models.maskformer.modeling_maskformer import (
        MaskFormerHungarianMatcher,
        MaskFormerLoss,
    )

    reference = MaskFormerLoss(NUM_LABELS, MaskFormerHungarianMatcher(1.0, 20.0, 1.0), WEIGHTS, 0.1)
    masks_logits, class_logits = random_logits(1)
    terms = reference(
        masks_logits, class_logits, [torch.zeros(0, 24, 24)], [torch.zeros(0, dtype=torch.int64)]
    )
    assert torch.isnan(terms["loss_mask"]).all()


def with_ignored_block(masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Mark the top-left 8x10 block ignored (255) in every mask."""
    marked = []
    for image_masks in masks:
        image_masks = image_masks.clone()
        image_masks[:, :8, :10] = 255
        marked.append(image_masks)
    return marked


def test_predictions_at_ignored_pixels_change_nothing():
    loss = make_loss()
    masks_logits, class_logits = random_logits(2, seed=1)
    mask_labels, class_labels = random_targets((3, 4), seed=1)
    mask_labels = with_ignored_block(mask_labels)

    perturbed = masks_logits.clone()
    perturbed[:, :, :8, :10] = torch.randn(2, 8, 8, 10) * 50
    assert torch.equal(
        torch.cat(
            [q for q, _ in loss.matcher(masks_logits, class_logits, mask_labels, class_labels)]
        ),
        torch.cat([q for q, _ in loss.matcher(perturbed, class_logits, mask_labels, class_labels)]),
    )
    before = loss(masks_logits, class_logits, mask_labels, class_labels)
    after = loss(perturbed, class_logits, mask_labels, class_labels)
    # Ignored pixels are dropped before any sum, so both calls add the same float32 values in the
    # same order (equal in practice); 1e-6 (~16 units of float32 rounding) only leaves room for
    # a kernel that splits a reduction differently at another thread count.
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=1e-6, atol=1e-7)

    # ...while the same perturbation on valid pixels does change the mask terms.
    moved = masks_logits.clone()
    moved[:, :, 10:18, 10:20] = perturbed[:, :, :8, :10]
    changed = loss(moved, class_logits, mask_labels, class_labels)
    assert not torch.isclose(changed["loss_mask"], before["loss_mask"])


def test_ignored_pixels_get_no_gradient():
    masks_logits, class_logits = random_logits(2, seed=2)
    masks_logits.requires_grad_(True)
    mask_labels, class_labels = random_targets((3, 4), seed=2)
    terms = make_loss()(masks_logits, class_logits, with_ignored_block(mask_labels), class_labels)
    (terms["loss_mask"] + terms["loss_dice"]).backward()
    assert torch.all(masks_logits.grad[:, :, :8, :10] == 0)
    assert masks_logits.grad[:, :, 8:, 10:].abs().sum() > 0


def test_loss_without_ignored_pixels_equals_plain_mean():
    """With no ignored pixel, the focal term is the plain per-pixel mean (the reference formula)."""
    masks_logits, class_logits = random_logits(1, seed=3)
    mask_labels, class_labels = random_targets((2,), seed=3)
    loss = make_loss()
    indices = loss.matcher(masks_logits, class_logits, mask_labels, class_labels)
    query, target = indices[0]
    logits = masks_logits[0, query].flatten(1)
    labels = mask_labels[0][target].flatten(1)
    probs = logits.sigmoid()
    ce = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    p_t = probs * labels + (1 - probs) * (1 - labels)
    alpha = 0.25 * labels + 0.75 * (1 - labels)
    expected = (alpha * ce * (1 - p_t) ** 2).mean(1).sum() / 2
    got = loss(masks_logits, class_logits, mask_labels, class_labels)["loss_mask"]
    torch.testing.assert_close(got, expected)


def test_nan_costs_do_not_crash_the_matcher():
    masks_logits, class_logits = random_logits(2, seed=4)
    class_logits[0, 0] = float("nan")
    masks_logits[1, 3] = float("inf")
    mask_labels, class_labels = random_targets((3, 2), seed=4)
    indices = MaskFormerHungarianMatcher(1.0, 20.0, 1.0)(
        masks_logits, class_logits, mask_labels, class_labels
    )
    assert [len(query) for query, _ in indices] == [3, 2]
    assert 0 not in indices[0][0].tolist()  # the NaN query is never the cheapest choice
    assert sorted(indices[0][1].tolist()) == [0, 1, 2]


def test_integer_mask_labels_accepted():
    masks_logits, class_logits = random_logits(2, seed=5)
    mask_labels, class_labels = random_targets((3, 2), seed=5)
    loss = make_loss()
    as_float = loss(masks_logits, class_logits, mask_labels, class_labels)
    as_int = loss(
        masks_logits, class_logits, [m.to(torch.int64) for m in mask_labels], class_labels
    )
    for key in as_float:
        torch.testing.assert_close(as_int[key], as_float[key])


def test_bf16_autocast():
    masks_logits, class_logits = random_logits(2, seed=6)
    mask_labels, class_labels = random_targets((3, 2), seed=6)
    loss = make_loss()
    reference = loss(masks_logits, class_logits, mask_labels, class_labels)
    masks_bf16 = masks_logits.bfloat16().requires_grad_(True)
    classes_bf16 = class_logits.bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = loss(masks_bf16, classes_bf16, mask_labels, class_labels)
        total = sum(WEIGHTS[key] * value for key, value in terms.items())
    total.backward()
    # bfloat16 keeps 8 significant bits: each logit is rounded by up to 2**-9 = 0.2 % and the
    # terms are means over those values, so they move by a few 2**-9; 2e-2 relative (about 10
    # bf16 roundings) with 2e-3 absolute for terms near zero, independent of the CPU's kernels.
    for key, value in terms.items():
        assert value.dtype == torch.float32 and math.isfinite(value.item())
        torch.testing.assert_close(value, reference[key], rtol=2e-2, atol=2e-3)
    assert masks_bf16.grad.dtype == torch.bfloat16 and torch.isfinite(masks_bf16.grad).all()


def test_num_masks_is_a_clamped_scalar():
    loss = make_loss()
    num_masks = loss.get_num_masks([torch.zeros(3), torch.zeros(4)], torch.device("cpu"))
    assert num_masks.shape == () and num_masks.item() == 7.0
    empty = loss.get_num_masks([torch.zeros(0)], torch.device("cpu"))
    assert empty.item() == 1.0


def test_bad_inputs_name_the_argument():
    masks_logits, class_logits = random_logits(2)
    mask_labels, class_labels = random_targets((3, 2))
    with pytest.raises(ValueError, match="one entry per image"):
        make_loss()(masks_logits, class_logits, mask_labels[:1], class_labels[:1])
    with pytest.raises(ValueError, match="class_labels\\[1\\]"):
        make_loss()(masks_logits, class_logits, mask_labels, [class_labels[0], class_labels[0]])

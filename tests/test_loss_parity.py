"""Matcher and loss against the transformers 4.34.1 oracle (targets without ignore pixels)."""

from __future__ import annotations

import pytest
import torch

from maskformer.modeling.criterion import MaskFormerLoss
from maskformer.modeling.matcher import MaskFormerHungarianMatcher

WEIGHTS = {"loss_cross_entropy": 1.0, "loss_mask": 20.0, "loss_dice": 1.0}


def random_batch(
    counts: tuple[int, ...],
    num_labels: int = 7,
    queries: int = 12,
    pred_size: tuple[int, int] = (16, 20),
    target_size: tuple[int, int] = (64, 80),
    seed: int = 0,
):
    generator = torch.Generator().manual_seed(seed)
    batch = len(counts)
    masks_logits = torch.randn(batch, queries, *pred_size, generator=generator) * 3
    class_logits = torch.randn(batch, queries, num_labels + 1, generator=generator) * 2
    mask_labels = [(torch.rand(n, *target_size, generator=generator) > 0.6).float() for n in counts]
    class_labels = [torch.randint(0, num_labels, (n,), generator=generator) for n in counts]
    return masks_logits, class_logits, mask_labels, class_labels


def both_losses(hf, num_labels: int = 7, eos_coef: float = 0.1):
    from transformers.models.maskformer.modeling_maskformer import (
        MaskFormerHungarianMatcher as ReferenceMatcher,
    )
    from transformers.models.maskformer.modeling_maskformer import (
        MaskFormerLoss as ReferenceLoss,
    )

    reference = ReferenceLoss(num_labels, ReferenceMatcher(1.0, 20.0, 1.0), WEIGHTS, eos_coef)
    ours = MaskFormerLoss(num_labels, MaskFormerHungarianMatcher(1.0, 20.0, 1.0), WEIGHTS, eos_coef)
    return reference, ours


@pytest.mark.parametrize("counts", [(3, 5), (1, 0, 12), (7,)])
def test_matched_indices_identical_to_reference(hf, counts):
    reference, ours = both_losses(hf)
    for seed in range(3):
        inputs = random_batch(counts, seed=seed)
        expected = reference.matcher(*inputs)
        got = ours.matcher(*inputs)
        assert len(got) == len(expected)
        for (query, target), (ref_query, ref_target) in zip(got, expected):
            assert query.dtype == torch.int64 and target.dtype == torch.int64
            assert torch.equal(query, ref_query)
            assert torch.equal(target, ref_target)


@pytest.mark.parametrize("counts", [(3, 5), (1, 0, 12), (10, 10)])
def test_loss_terms_match_reference(hf, counts):
    reference, ours = both_losses(hf)
    inputs = random_batch(counts, seed=1)
    expected = reference(*inputs)
    got = ours(*inputs)
    assert set(got) == set(expected) == {"loss_mask", "loss_dice", "loss_cross_entropy"}
    # The mask terms are means over up to 12 x 64 x 64 sigmoid / dice values, summed in another
    # order than the reference's: sqrt(n) * u = 220 * 6e-8 = 1.3e-5 at worst typical, so 1e-5
    # relative plus 1e-6 absolute for small terms. The cross-entropy is the same call on the
    # same values in the same order (1e-6: a few roundings, for a kernel split differently).
    for key, value in got.items():
        assert value.shape == ()  # the reference gives shape [1] for the mask terms
        torch.testing.assert_close(value, expected[key].reshape(()), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        got["loss_cross_entropy"], expected["loss_cross_entropy"], rtol=1e-6, atol=0
    )


def test_same_size_prediction_and_target_match_reference(hf):
    reference, ours = both_losses(hf)
    inputs = random_batch((4, 2), pred_size=(24, 24), target_size=(24, 24), seed=5)
    expected, got = reference(*inputs), ours(*inputs)
    for key in got:
        torch.testing.assert_close(got[key], expected[key].reshape(()), rtol=1e-5, atol=1e-6)


def test_auxiliary_sets_match_reference(hf):
    reference, ours = both_losses(hf)
    masks_logits, class_logits, mask_labels, class_labels = random_batch((4, 6), seed=2)
    generator = torch.Generator().manual_seed(3)
    auxiliary = [
        {
            "masks_queries_logits": torch.randn(masks_logits.shape, generator=generator),
            "class_queries_logits": torch.randn(class_logits.shape, generator=generator),
        }
        for _ in range(2)
    ]
    expected = reference(masks_logits, class_logits, mask_labels, class_labels, auxiliary)
    got = ours(masks_logits, class_logits, mask_labels, class_labels, auxiliary)
    assert set(got) == set(expected)
    assert {"loss_mask_1", "loss_dice_0", "loss_cross_entropy_1"} <= set(got)
    for key in got:
        torch.testing.assert_close(got[key], expected[key].reshape(()), rtol=1e-5, atol=1e-6)


def test_gradients_of_logits_match_reference(hf):
    reference, ours = both_losses(hf)
    masks_logits, class_logits, mask_labels, class_labels = random_batch((3, 5), seed=4)
    grads = []
    for loss_module in (reference, ours):
        masks = masks_logits.clone().requires_grad_(True)
        classes = class_logits.clone().requires_grad_(True)
        terms = loss_module(masks, classes, mask_labels, class_labels)
        total = sum(WEIGHTS[key] * value.sum() for key, value in terms.items())
        total.backward()
        grads.append((masks.grad, classes.grad))
    # Element-wise: each gradient entry is a product of per-pixel terms and dice denominators
    # (sums over a mask's pixels, rounded by ~sqrt(n) * u = 1e-5 relative); 1e-4 relative leaves
    # a 10x margin, and 1e-8 absolute covers entries far below the typical entry size
    # (1 / (num_masks * pixels) ~ 1e-4).
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-4, atol=1e-8)


def test_empty_weight_buffer_matches_reference(hf):
    reference, ours = both_losses(hf, eos_coef=0.25)
    assert "empty_weight" in dict(ours.named_buffers())
    assert "empty_weight" in ours.state_dict()
    torch.testing.assert_close(ours.empty_weight, reference.empty_weight)

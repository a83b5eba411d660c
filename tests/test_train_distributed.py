"""torchrun with two CPU processes (gloo) against one process on the joined batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _train_ddp_script import LEARNING_RATE, STEPS
from _train_ddp_script import run as run_one_process
from _train_support import read_log

SCRIPT = Path(__file__).resolve().parent / "_train_ddp_script.py"

# What may differ between 2 processes x batch 2 and 1 process x batch 4, and why it does not here:
# * num_masks: each process counts its own targets; the loss all-reduces them to the mean over
#   processes, and DDP averages the gradients, so the mask terms (sum over a rank's masks /
#   mean count) averaged over ranks equal the one-process sum over all masks / total count.
# * The class cross-entropy is a weighted mean per process (weights: 1, no-object 0.1 by
#   default); the mean of per-process weighted means differs from the weighted mean of the
#   joined batch when the ranks hold different numbers of matched queries. The script sets the
#   no-object weight to 1, where both are the plain mean over equally many queries.
# * BatchNorm would normalise per process (half the batch): the test uses the Swin preset
#   (LayerNorm/GroupNorm only, both per sample). Dropout and drop-path are off, and all crops
#   have the same size, so no padding differs.
# What remains is float summation order (DDP's gradient all-reduce and bucket layout, the
# batched convolutions of 2 vs 4 images, kernels that differ with and without AVX-512 and with the
# thread count). The images are 64 px: at 32 px Swin's last stage is 1x1 and the FPN's GroupNorm
# sees two values per group, which turns rounding noise into visible gradient differences.
#
# Tolerances, each in units of what the computation can move:
# * First-step gradients (both runs hold the same weights, so they differ by rounding only):
#   the longest reduction in a gradient sums n = 4 images x 64 x 64 pixels; float32 rounding of
#   such a sum is about sqrt(n) * u = 128 * 6e-8 = 8e-6 of its size (u = 2**-24), and a chain of
#   layers adds a small factor. The whole-model relative difference ||dg|| / ||g|| must stay
#   below 2e-5 (measured 2e-7 with 1 thread and AVX-512, 2e-10 with 2 threads). Element-wise
#   comparison would be wrong: entries that cancel to ~0 (the attention key biases get ~1e-19,
#   exactly zero in exact arithmetic) carry rounding of the size of their summands.
# * Weights after STEPS AdamW steps: AdamW moves an entry by lr * m / (sqrt(v) + eps) per step,
#   at most about lr whatever the gradient's size. Entries with gradients of the order of eps
#   (1e-8; e.g. the queries and decoder attention weights here, whose first gradients are 1e-13)
#   sit where the step is most sensitive to the gradient, so rounding there becomes a visible
#   share of lr; nothing smaller than "a share of lr * STEPS" can be promised. The check is
#   |dw| <= 0.05 * lr * STEPS per entry: a wrong learning rate, a rank that does not step or
#   gradients that are not averaged move many entries by ~lr per step (measured worst: 0.006
#   with 1 thread and AVX-512, 4e-5 with 2 threads).
# * Loss terms logged at step 1 come from the same weights: rounding only, 1e-5 relative (each
#   term is a mean over at most 4 x 64 x 64 values: sqrt(n) * u = 8e-6).
# * The last step's losses come from weights that differ as above. The entries that differ most
#   are those with near-zero gradient, which hardly move the loss; entries with large gradients
#   differ by rounding of their steps. 1e-4 relative (measured 1.6e-6).
GRADIENT_RTOL = 2e-5
PARAMETER_ATOL_IN_LR_STEPS = 0.05
FIRST_LOSS_RTOL = 1e-5
LAST_LOSS_RTOL = 1e-4


@pytest.mark.distributed
def test_two_processes_match_one_process_on_the_joined_batch(tmp_path):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(SCRIPT),
        str(ddp_dir),
        "2",
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-4000:]
    run_one_process(single_dir, 4)

    reports = [json.loads((ddp_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    single = json.loads((single_dir / "rank0.json").read_text())
    assert reports[0]["step"] == reports[1]["step"] == single["step"] == 3

    # Both ranks used the same global num_masks: the mean of their local target counts.
    rank0, rank1 = reports[0]["steps"], reports[1]["steps"]
    assert len(rank0) == len(rank1) == 3
    for step, (a, b, joined) in enumerate(zip(rank0, rank1, single["steps"])):
        assert a["num_masks"] == b["num_masks"] == (a["local"] + b["local"]) / 2, step
        assert joined["local"] == a["local"] + b["local"], step
    assert any(a["local"] != b["local"] for a, b in zip(rank0, rank1)), "ranks must differ"

    # Identical weights on both ranks (DDP averages gradients, every rank steps the same).
    weights = [torch.load(ddp_dir / f"weights_rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name

    # Close to one process on the joined batch (see the tolerances above).
    gradients = [
        torch.load(d / "gradients_rank0.pt", weights_only=True) for d in (ddp_dir, single_dir)
    ]
    assert gradients[0].keys() == gradients[1].keys() and gradients[0]
    difference = torch.cat([(gradients[0][n] - g).flatten() for n, g in gradients[1].items()])
    size = torch.cat([g.flatten() for g in gradients[1].values()]).norm()
    assert float(difference.norm() / size) < GRADIENT_RTOL

    joined = torch.load(single_dir / "weights_rank0.pt", weights_only=True)
    worst = max(float((weights[0][n].double() - joined[n].double()).abs().max()) for n in joined)
    assert worst <= PARAMETER_ATOL_IN_LR_STEPS * LEARNING_RATE * STEPS, worst

    first = [read_log(d)[0] for d in (ddp_dir, single_dir)]
    assert first[0]["step"] == first[1]["step"] == 1
    for key in ("loss", "loss_cross_entropy", "loss_mask", "loss_dice"):
        assert first[0][key] == pytest.approx(first[1][key], rel=FIRST_LOSS_RTOL), key
    for key, value in single["losses"].items():
        if key == "num_masks":  # the count of the joined batch vs the mean count per process
            continue
        assert reports[0]["losses"][key] == pytest.approx(value, rel=LAST_LOSS_RTOL, abs=1e-7), key

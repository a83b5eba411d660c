"""Two gloo processes, each given half of the data, compute what one process computes on all."""

from __future__ import annotations

import datetime
import math
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from maskformer.evaluation import (
    InstanceSegmentationMetric,
    PanopticQualityMetric,
    SemanticSegmentationMetric,
)

NUM_IMAGES = 6
CATEGORIES = {1: True, 2: True, 3: False}


def _image(index: int) -> dict:
    """Deterministic synthetic image ``index``: semantic maps, panoptic maps, instance masks."""
    rng = np.random.default_rng(index)
    semantic_target = rng.integers(0, 4, (16, 16))
    semantic_target[rng.random((16, 16)) < 0.1] = 255
    semantic_pred = np.where(
        rng.random((16, 16)) < 0.7, semantic_target, rng.integers(0, 4, (16, 16))
    )
    semantic_pred[semantic_pred == 255] = 0

    gt = np.kron(rng.integers(0, 5, (4, 4)), np.ones((4, 4), dtype=np.int64))
    gt_info = [
        {"id": int(i), "category_id": int(rng.integers(1, 4)), "iscrowd": int(rng.random() < 0.2)}
        for i in np.unique(gt)
        if i
    ]
    pred = np.roll(gt, shift=int(rng.integers(-2, 3)), axis=1)
    pred_info = [
        {"id": s["id"], "category_id": s["category_id"] if rng.random() < 0.8 else 1}
        for s in gt_info
    ]

    gt_masks = (
        np.stack([gt == s["id"] for s in gt_info]) if gt_info else np.zeros((0, 16, 16), bool)
    )
    pred_masks = np.stack([pred == s["id"] for s in pred_info]) if pred_info else gt_masks
    return {
        "semantic": (torch.from_numpy(semantic_pred), torch.from_numpy(semantic_target)),
        "panoptic": (torch.from_numpy(pred), pred_info, torch.from_numpy(gt), gt_info),
        "instance": dict(
            pred_masks=pred_masks,
            pred_scores=rng.random(len(pred_info)),
            pred_labels=[s["category_id"] for s in pred_info],
            gt_masks=gt_masks,
            gt_labels=[s["category_id"] for s in gt_info],
            gt_iscrowd=[s["iscrowd"] for s in gt_info],
            image_id=index,
        ),
    }


def _run(indices: list[int]) -> dict:
    semantic = SemanticSegmentationMetric(4)
    panoptic = PanopticQualityMetric(CATEGORIES)
    instance = InstanceSegmentationMetric()
    for index in indices:
        image = _image(index)
        semantic.update(*image["semantic"])
        panoptic.update(*image["panoptic"])
        instance.update(**image["instance"])
    return {
        "semantic": semantic.compute(),
        "panoptic": panoptic.compute(),
        "instance": instance.compute(),
    }


def _worker(rank: int, port: int, result_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        # Rank 1 also gets image 0 again, as a padding sampler would: the instance metric counts
        # it once (by image_id); the sum-based metrics get it only on rank 0 here.
        indices = list(range(rank, NUM_IMAGES, 2))
        results = _run(indices)
        if rank == 1:
            extra = InstanceSegmentationMetric()
            for index in indices + [0]:
                extra.update(**_image(index)["instance"])
        else:
            extra = InstanceSegmentationMetric()
            for index in indices:
                extra.update(**_image(index)["instance"])
        results["instance_with_repeat"] = extra.compute()
        if rank == 0:
            Path(result_file).write_bytes(pickle.dumps(results))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _assert_equal(a, b, path="") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_equal(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        # Counts are gathered exactly (integer all-reduce); the float64 figures derived from them
        # are computed by the same code on equal counts, so they agree to the last bit unless a
        # reduction order differs: a few ulps of values <= 1, far below abs=1e-12.
        assert a == pytest.approx(b, abs=1e-12), path


@pytest.mark.distributed
def test_two_processes_equal_one_process(tmp_path) -> None:
    result_file = tmp_path / "rank0.pkl"
    mp.spawn(_worker, args=(_free_port(), str(result_file)), nprocs=2, join=True)
    distributed = pickle.loads(result_file.read_bytes())
    single = _run(list(range(NUM_IMAGES)))
    assert 0 < single["panoptic"]["PQ"] < 1 and 0 < single["instance"]["AP"] < 1
    _assert_equal(distributed["semantic"], single["semantic"])
    _assert_equal(distributed["panoptic"], single["panoptic"])
    _assert_equal(distributed["instance"], single["instance"])
    _assert_equal(distributed["instance_with_repeat"], single["instance"])

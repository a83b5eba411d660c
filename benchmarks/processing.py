"""Time our image processor and post-processors against transformers 4.34.1 on the same inputs.

    python benchmarks/processing.py [--threads 2] [--repeats 5] [--rounds 5]
        [--families realistic trained synthetic preprocess] [--demo-model demo_output/model]

Families of workloads (each post-processes semantic, instance and panoptic segmentations of a
2-image batch; the logits are computed once, in this process, and read by every child):

* ``realistic``: the ``swin-tiny-ade`` preset with random weights (seed 0) on two real photos
  from ../shared/data (ADE_val_00000001, 512x683, and COCO 000000142238, 427x640), processed
  at 512x512, so masks are 128x128, post-processed to the photos' sizes. A random decoder makes
  its 100 queries nearly identical, so the logits are scaled like a trained model's: per image,
  the part shared by all queries is removed and the rest standardised, class logits to std 3 and
  mask logits to std 9.4 (mean 0), the spread of the trained demo model's logits. About 25 of the
  100 queries then pass the 0.5 score threshold and their masks cover the image.
* ``trained``: the model ``maskformer demo`` trains (``--demo-model``, default
  ``demo_output/model``; skipped with a message when absent) on two of its held-out images
  (seed 1000003), which the processor's default size (shortest edge 800) turns into 800x800
  inputs: masks 200x200, post-processed to 800x800.
* ``synthetic``: i.i.d. noise fields shaped like a model's outputs (100 queries, masks at 1/4 of
  800x1088, to 480x640): semantic with 150 classes, instance and panoptic with 133. No target.
* ``preprocess``: the processor on 8 photos (~640x480) without and with segmentation maps.

Each implementation runs each workload in its own fresh Python process (as a user runs one or
the other), rounds alternating which goes first; the tables give the median over rounds of each
round's median milliseconds, the spread of the rounds (min-max), and the ratio ours / reference.

OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless set otherwise): on a shared,
oversubscribed machine spinning workers turn every small parallel op into a scheduler time
slice, which says nothing about either implementation. It applies to both.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from maskformer.processing import MaskFormerImageProcessor  # noqa: E402
from maskformer.utils.coco import rgb_to_panoptic_ids  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
POST = {"semantic": 0.75, "instance": 0.1, "panoptic": 0.5}
TARGETS: dict[str, dict[str, float | None]] = {
    "realistic": dict(POST),
    "trained": dict(POST),
    "synthetic": dict.fromkeys(POST),
    "preprocess": {"preprocess": 0.35, "preprocess+maps": 0.35},
}
REALISTIC_PHOTOS = [
    "ade20k_sample/images/ADE_val_00000001.jpg",
    "coco_panoptic_sample/images/000000142238.jpg",
]
# The trained demo model's logit spread (std over its held-out outputs, measured: 3.1 and 9.4).
CLASS_STD, MASK_STD = 3.0, 9.4


# ------------------------------------------------------------------------------------- inputs


def sample_photos(count: int = 8) -> tuple[list[Image.Image], list[np.ndarray], str]:
    """``count`` RGB photos and uint8 semantic maps (real when the sample data is there)."""
    ade, coco = SHARED_DATA / "ade20k_sample", SHARED_DATA / "coco_panoptic_sample"
    pairs: list[tuple[Image.Image, np.ndarray]] = []
    if ade.is_dir() and coco.is_dir():
        for path in sorted((ade / "images").glob("*.jpg")):
            label_map = np.asarray(Image.open(ade / "annotations" / f"{path.stem}.png"))
            pairs.append((Image.open(path).convert("RGB"), label_map))
        annotations = json.loads((coco / "panoptic_examples.json").read_text())["annotations"]
        for annotation in annotations:  # category ids of the segments: a semantic map
            name = annotation["file_name"]
            ids = rgb_to_panoptic_ids(np.asarray(Image.open(coco / "panoptic" / name)))
            category = {s["id"]: s["category_id"] for s in annotation["segments_info"]}
            present, inverse = np.unique(ids, return_inverse=True)
            table = np.array([category.get(int(i), 0) for i in present], dtype=np.uint8)
            photo = Image.open(coco / "images" / name.replace(".png", ".jpg")).convert("RGB")
            pairs.append((photo, table[inverse].reshape(ids.shape)))
        source = "real photos from ../shared/data"
    else:
        rng = np.random.default_rng(0)
        for _ in range(count):
            photo = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
            coarse = rng.integers(0, 150, (15, 20)).astype(np.uint8)
            label_map = np.asarray(Image.fromarray(coarse).resize((640, 480), Image.NEAREST))
            pairs.append((photo, label_map))
        source = "synthetic 640x480 images"
    pairs = [pairs[i % len(pairs)] for i in range(count)]
    return [p for p, _ in pairs], [m for _, m in pairs], source


def noise_outputs(
    classes: int, seed: int, batch: int = 2, queries: int = 100, objects: int = 20
) -> dict[str, torch.Tensor]:
    """The synthetic family: ``objects`` confident queries whose masks tile the image with
    borders blurred by i.i.d. logit noise, the rest "no object" with low masks."""
    height, width = 200, 272
    generator = torch.Generator().manual_seed(seed)
    class_logits = torch.randn(batch, queries, classes + 1, generator=generator)
    class_logits[..., classes] += 6
    mask_logits = torch.randn(batch, queries, height, width, generator=generator) - 6
    for b in range(batch):
        chosen = torch.randperm(queries, generator=generator)[:objects]
        labels = torch.randint(0, classes, (objects,), generator=generator)
        class_logits[b, chosen, labels] += 12
        class_logits[b, chosen, classes] -= 6
        field = torch.randn(1, objects, height // 20, width // 20, generator=generator)
        regions = F.interpolate(field, size=(height, width), mode="bicubic")[0].argmax(0)
        for index, query in enumerate(chosen.tolist()):
            region = F.avg_pool2d((regions == index).float()[None, None], 5, 1, 2)[0, 0]
            noise = torch.randn(height, width, generator=generator)
            mask_logits[b, query] = (region - 0.5) * 20 + noise
    return {"class": class_logits, "mask": mask_logits, "sizes": torch.tensor([[480, 640]] * 2)}


def _spread(logits: torch.Tensor, std: float) -> torch.Tensor:
    """Per image: minus the mean over queries, standardised to ``std``."""
    residual = logits - logits.mean(dim=1, keepdim=True)
    scale = residual.flatten(1).std(dim=1).view(-1, *[1] * (logits.dim() - 1))
    return residual / scale * std


def realistic_outputs() -> dict[str, torch.Tensor] | str:
    """Scaled logits of the random-weight swin-tiny-ade model on two photos, or why not."""
    from maskformer import MaskFormerForInstanceSegmentation
    from maskformer.presets import get_preset

    paths = [SHARED_DATA / name for name in REALISTIC_PHOTOS]
    if not all(path.is_file() for path in paths):
        return f"the sample photos are absent ({paths[0].parent})"
    photos = [Image.open(path).convert("RGB") for path in paths]
    processor = MaskFormerImageProcessor(size={"height": 512, "width": 512})
    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(get_preset("swin-tiny-ade")).eval()
    with torch.inference_mode():
        outputs = model(**processor(photos, return_tensors="pt"))
    return {
        "class": _spread(outputs.class_queries_logits, CLASS_STD),
        "mask": _spread(outputs.masks_queries_logits, MASK_STD),
        "sizes": torch.tensor([photo.size[::-1] for photo in photos]),
    }


def trained_outputs(model_dir: Path) -> dict[str, torch.Tensor] | str:
    """The demo model's logits on two held-out images at the processor's default size."""
    from maskformer import MaskFormerForInstanceSegmentation
    from maskformer.data.synthetic import SyntheticShapesDataset

    if not (model_dir / "config.json").is_file():
        return f"no demo model at {model_dir} (run `maskformer demo`, or pass --demo-model PATH)"
    held_out = SyntheticShapesDataset(2, image_size=64, seed=1_000_003)
    images = [Image.fromarray(held_out.get_ground_truth(i)[0]) for i in range(2)]
    inputs = MaskFormerImageProcessor()(images, return_tensors="pt")
    model = MaskFormerForInstanceSegmentation.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        outputs = model(**inputs)
    return {
        "class": outputs.class_queries_logits,
        "mask": outputs.masks_queries_logits,
        "sizes": torch.tensor([list(inputs["pixel_values"].shape[-2:])] * 2),
    }


# ---------------------------------------------------------------------------------- workloads


def workload(implementation: str, family: str, task: str, logits: Path | None) -> Callable:
    """One implementation's ("ours" or "reference") call for ``task`` of ``family``."""
    if implementation == "reference":
        logging.getLogger("transformers").setLevel(logging.ERROR)
        warnings.simplefilter("ignore")
        import transformers  # the reference, test-only

        processor = transformers.MaskFormerImageProcessor()
        fuse = {"label_ids_to_fuse": set()}  # its default None warns on every call
    else:
        processor, fuse = MaskFormerImageProcessor(), {}
    if family == "preprocess":
        photos, maps, _ = sample_photos()
        if task == "preprocess":
            return lambda: processor(photos, return_tensors="pt")
        return lambda: processor(photos, maps, ignore_index=255, return_tensors="pt")
    data = torch.load(logits, weights_only=True)
    outputs = types.SimpleNamespace(
        class_queries_logits=data["class"], masks_queries_logits=data["mask"]
    )
    sizes = [tuple(size) for size in data["sizes"].tolist()]
    if task == "semantic":
        return lambda: processor.post_process_semantic_segmentation(outputs, target_sizes=sizes)
    if task == "instance":
        return lambda: processor.post_process_instance_segmentation(outputs, target_sizes=sizes)
    return lambda: processor.post_process_panoptic_segmentation(outputs, target_sizes=sizes, **fuse)


def median_ms(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call, in milliseconds."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def child_median_ms(
    implementation: str, family: str, task: str, logits: Path | None, args: argparse.Namespace
) -> float:
    """``median_ms`` of one workload of one implementation, in a fresh Python process."""
    command = [sys.executable, __file__, "--child", implementation, family, task]
    command += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
    command += ["--logits", str(logits)] if logits is not None else []
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1])["ms"])


def family_logits(family: str, args: argparse.Namespace, folder: Path) -> Path | None | str:
    """Write the family's logits under ``folder``: their path, None (no logits) or why not."""
    if family == "preprocess":
        return None
    if family == "realistic":
        data = realistic_outputs()
    elif family == "trained":
        data = trained_outputs(args.demo_model)
    else:
        data = {
            "semantic": noise_outputs(150, seed=0),
            "segments": noise_outputs(133, seed=1),
        }
        for name, tensors in data.items():
            torch.save(tensors, folder / f"synthetic-{name}.pt")
        return folder / "synthetic-{}.pt"
    if isinstance(data, str):
        return data
    torch.save(data, folder / f"{family}.pt")
    scores, labels = data["class"].softmax(-1).max(-1)
    kept = ((scores > 0.5) & (labels != data["class"].shape[-1] - 1)).sum(1).tolist()
    shape = "x".join(str(s) for s in data["mask"].shape)
    print(f"  {family}: masks {shape}, to {data['sizes'].tolist()}; kept queries {kept}")
    return folder / f"{family}.pt"


def run_family(family: str, logits: Path | None, args: argparse.Namespace) -> None:
    print(f"\n{family}")
    print(f"{'workload':<16} {'ours ms':>18} {'reference ms':>18} {'ratio':>7} {'target':>7}")
    for task, target in TARGETS[family].items():
        path = logits
        if family == "synthetic":
            path = Path(str(logits).format("semantic" if task == "semantic" else "segments"))
        rounds: dict[str, list[float]] = {"ours": [], "reference": []}
        for index in range(args.rounds):  # alternate which goes first
            order = ["reference", "ours"] if index % 2 == 0 else ["ours", "reference"]
            for implementation in order:
                ms = child_median_ms(implementation, family, task, path, args)
                rounds[implementation].append(ms)
        ours, theirs = (
            f"{statistics.median(r):.1f} ({min(r):.0f}-{max(r):.0f})"
            for r in (rounds["ours"], rounds["reference"])
        )
        ratio = statistics.median(rounds["ours"]) / statistics.median(rounds["reference"])
        flag = "-" if target is None else f"{target:.2f} {'ok' if ratio <= target else 'MISSED'}"
        print(f"{task:<16} {ours:>18} {theirs:>18} {ratio:>7.3f} {flag:>7}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per measurement")
    parser.add_argument(
        "--rounds", type=int, default=5, help="child processes per implementation and workload"
    )
    parser.add_argument(
        "--families", nargs="+", choices=list(TARGETS), default=list(TARGETS), help="run these"
    )
    parser.add_argument(
        "--demo-model",
        type=Path,
        default=Path("demo_output/model"),
        help="the model `maskformer demo` trained (the `trained` family)",
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--logits", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        run = workload(*args.child, args.logits)
        print(json.dumps({"ms": median_ms(run, args.repeats)}))
        return

    print(
        f"torch threads: {args.threads}; a fresh process per implementation and workload, "
        f"{args.rounds} rounds of {args.repeats} runs: median (min-max) of the rounds' medians"
    )
    with tempfile.TemporaryDirectory(prefix="maskformer-bench-") as folder:
        for family in args.families:
            logits = family_logits(family, args, Path(folder))
            if isinstance(logits, str):
                print(f"\n{family}: skipped, {logits}")
                continue
            run_family(family, logits, args)


if __name__ == "__main__":
    main()

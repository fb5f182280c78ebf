"""Batches of a streamed split, read and decoded on the host by grain, in a fixed order.

A batch is a pure function of its step (training) or its index (evaluation): which examples it holds
comes from the epoch's order, computed by the caller exactly as the device pipeline computes it, and
every random choice of the host transform is drawn from (seed, epoch, example), never from a worker.
So the batches are the same with 0 or N worker processes, and a run resumed at step s reads from step s.

Nothing here imports JAX (grain's worker processes unpickle the readers).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import grain
import numpy as np
from PIL import Image

from cnn_jax.data.streamed import BadImage, StreamedSplit

BAD_IMAGE_POLICIES = ("stop", "skip")


@dataclass(frozen=True)
class HostTransform:
    """What the host does to a decoded image. `size` 0: nothing (every image must have `shape`; the jitted
    step augments). `size` > 0, the standard ImageNet recipe: training takes a random-resized crop (area
    `scale` of the image, aspect ratio in `ratio`, resized to size x size; Szegedy et al. 2015, as
    torchvision's RandomResizedCrop) when `random_resized_crop`, else what evaluation takes: the image
    resized so its shorter side is size / `crop_fraction`, then the central size x size (0.875: 256 -> 224).
    Bilinear resizing with PIL; a grey image among colour ones gets three equal channels."""

    size: int = 0
    channels: int = 3
    shape: tuple[int, int, int] | None = None  # when size is 0
    random_resized_crop: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_fraction: float = 0.875

    @property
    def random(self) -> bool:
        """Whether training draws random numbers on the host (else it is the evaluation transform)."""
        return bool(self.size and self.random_resized_crop)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, self.channels) if self.size else tuple(self.shape)

    def train(self, image: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """The training transform; `rng` (None when not `random`) draws the crop."""
        if self.random:
            return self._resized(image, self._crop_box(image.shape[0], image.shape[1], rng), (self.size, self.size))
        return self.eval(image)

    def eval(self, image: np.ndarray) -> np.ndarray:
        if not self.size:
            if image.shape != tuple(self.shape):
                raise ValueError(
                    f"is {image.shape[0]}x{image.shape[1]}x{image.shape[2]} where the others are "
                    f"{'x'.join(map(str, self.shape))}; set dataset.image_size to resize and crop every image"
                )
            return image
        height, width = image.shape[:2]
        short = round(self.size / self.crop_fraction)
        h, w = (short, round(width * short / height)) if height <= width else (round(height * short / width), short)
        top, left = (h - self.size) // 2, (w - self.size) // 2
        resized = self._resized(image, (0, 0, width, height), (w, h))
        return resized[top : top + self.size, left : left + self.size]

    def _crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of a random crop; after 10 failed draws, the central crop at the
        nearest allowed aspect ratio (torchvision's algorithm)."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
                return left, top, left + w, top + h
        aspect = width / height
        if aspect < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
        return left, top, left + w, top + h

    def _resized(self, image: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        out = np.asarray(pil.resize(size, Image.BILINEAR, box=box))
        out = out[..., None] if out.ndim == 2 else out
        if out.shape[-1] != self.channels:
            out = np.repeat(out, self.channels, axis=-1) if out.shape[-1] == 1 else out[..., : self.channels]
        return out


def example_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    """The random numbers of one example's host transform in one epoch: from (seed, epoch, position) only."""
    return np.random.default_rng([seed, epoch, position])


def read_examples(split: StreamedSplit, positions: np.ndarray, transform, skip_bad: bool) -> dict:
    """Decode and transform the examples at `positions`; a bad one is stopped at (BadImage), or, with
    `skip_bad`, replaced by the next readable example of the split and counted in 'skipped'."""
    images, labels, bad = [], [], []
    for position in positions:
        for offset in range(len(split)):
            p = (int(position) + offset) % len(split)
            try:
                images.append(transform(split.read(p), p))
                labels.append(split.labels[p])
                break
            except (BadImage, ValueError) as exc:
                failure = exc if isinstance(exc, BadImage) else BadImage(split.name(p), str(exc))
                if not skip_bad:
                    raise failure from None
                bad.append(failure.name)
        else:
            raise BadImage(split.name(int(position)), "no image of the split is readable")
    return {
        "image": np.stack(images),
        "label": np.asarray(labels, np.int32),
        "mask": np.ones(len(labels), bool),
        "skipped": np.int32(len(bad)),
        "bad": np.asarray(bad[:4], dtype=object),
    }


@dataclass(frozen=True)
class TrainReader:
    """step -> this process's rows (`rows` of every global batch) of that step's training batch."""

    split: StreamedSplit
    orders: np.ndarray  # (epochs, n): the order of epochs first_epoch, first_epoch + 1, ...
    first_epoch: int
    steps_per_epoch: int
    batch_size: int
    rows: tuple[int, int]
    transform: HostTransform
    seed: int
    skip_bad: bool

    def __call__(self, step: int) -> dict:
        epoch, index = divmod(int(step), self.steps_per_epoch)
        start = index * self.batch_size
        positions = self.orders[epoch - self.first_epoch][start + self.rows[0] : start + self.rows[1]]
        if not self.transform.random:  # drawing a generator per image costs as much as decoding a small one
            return read_examples(self.split, positions, lambda image, p: self.transform.eval(image), self.skip_bad)
        return read_examples(
            self.split,
            positions,
            lambda image, p: self.transform.train(image, example_rng(self.seed, epoch, p)),
            self.skip_bad,
        )


@dataclass(frozen=True)
class EvalReader:
    """index -> this process's rows of evaluation batch `index`, in stored order; past the split's end,
    zero images with mask False. A bad image (with `skip_bad`) is masked out and counted."""

    split: StreamedSplit
    batch_size: int
    rows: tuple[int, int]
    transform: HostTransform
    skip_bad: bool

    def __call__(self, index: int) -> dict:
        positions = np.arange(index * self.batch_size + self.rows[0], index * self.batch_size + self.rows[1])
        shape = self.transform.output_shape
        images = np.zeros((len(positions), *shape), np.uint8)
        labels = np.zeros(len(positions), np.int32)
        mask = positions < len(self.split)
        bad = []
        for i in np.flatnonzero(mask):
            try:
                images[i] = self.transform.eval(self.split.read(positions[i]))
                labels[i] = self.split.labels[positions[i]]
            except (BadImage, ValueError) as exc:
                failure = exc if isinstance(exc, BadImage) else BadImage(self.split.name(positions[i]), str(exc))
                if not self.skip_bad:
                    raise failure from None
                mask[i] = False
                bad.append(failure.name)
        return {
            "image": images,
            "label": labels,
            "mask": mask,
            "skipped": np.int32(len(bad)),
            "bad": np.asarray(bad[:4], dtype=object),
        }


def _absl_flags_parsed() -> None:
    """grain reads absl flags; a program that never parsed them (ours) takes their defaults."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


@contextlib.contextmanager
def batches(reader, start: int, stop: int, workers: int, prefetch: int = 4) -> Iterator[Iterator[dict]]:
    """Yield an iterator over reader(start), ..., reader(stop - 1), in that order: decoded by `workers`
    grain worker processes, or (0) by one background thread of this process; closed on exit. (One thread:
    a second one competes for the interpreter lock on small images, and for the cores the step uses;
    benchmarks/results/loader_speed.json.)"""
    _absl_flags_parsed()
    dataset = grain.MapDataset.range(start, stop).map(reader)
    stream = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch))
    if workers:
        stream = stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=prefetch))
    iterator = iter(stream)
    try:
        yield iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()

"""Peak memory of streaming one epoch through cnn_jax's loader, at 10,000 vs 60,000 images, against loading them.

    python benchmarks/stream_memory.py [--folder DIR] [--workers 0,2] [--sizes 32,224] [--batch-size 128]
        [--out benchmarks/results/stream_memory.json]

Data: the CIFAR-10 JPEG image folder (train/ 50,000 and test/ 10,000 files of 32x32), extracted from
/work/shared/data/cifar10-jpeg/cifar10-jpeg.tgz into a temporary folder unless --folder names an
extracted copy. 10,000 images: the test split (`list_folder(root, "test", ...)`); 60,000: train and test
listed together as one split (a `FolderSource` over both folders' files).

Each case runs in a fresh process, which reports its peak memory:

  stream     one full epoch (a random order, batches of --batch-size, the remainder dropped) through
             `cnn_jax.data.loader.batches(TrainReader(...), 0, steps, workers)`, at image size 32 (as
             stored: decode only) and 224 (`HostTransform(size=224, random_resized_crop=True)`), with
             each worker count of --workers (0: threads of the process; N: N grain worker processes);
  resident   the same images decoded into one preallocated uint8 array (n, 32, 32, 3), what the
             device-resident pipeline holds (at 224 it would need n x 150,528 bytes: 1.4 GiB at 10,000,
             8.4 GiB at 60,000; reported as arithmetic, not run);
  read_image_folder  the project's own loader of a whole image folder into arrays
             (`cnn_jax.data.local_files.read_image_folder`, as dataset.source=device reads it: a list of
             decoded images, then np.stack per split): the test split alone (10,000), or the folder (60,000).

Reported per case: the process's own peak resident set (ru_maxrss), its resident set after imports and
listing (before reading any image), the largest worker's peak (RUSAGE_CHILDREN once the workers have
exited) and the peak over time of the summed proportional set size (PSS, from /proc/<pid>/smaps_rollup,
sampled every 20 ms) of the process and its workers, which counts shared memory (grain hands batches over
in shared memory) once. The point: the streamed peak does not grow with the number of images (it is
bounded by the batches in flight: the prefetch buffers and the threads' or workers' batches in progress;
what grows is the listing, the labels and the epoch's order, a few MB, also pickled to each worker); the
resident one grows by n x 3,072 bytes at 32x32, and read_image_folder by about twice that (the list of
images and their stack). 'base' includes `import grain`, which imports JAX (~200 MB), in every worker
too. Prints a table and writes benchmarks/results/stream_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "RESULT "
SIZES = (10_000, 60_000)
BYTES_224 = 224 * 224 * 3


def kib_to_mb(kib: float) -> float:
    return round(kib / 1024.0, 1)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return kib_to_mb(int(line.split()[1]))
    return float("nan")


def tree_pids(pid: int) -> list[int]:
    """`pid` and its live descendants."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        out.append(p)
        frontier += [c for c, pp in parent.items() if pp == p]
    return out


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeSampler:
    """Samples the summed PSS of this process and its descendants every `interval` seconds; keeps the peak
    and the most processes seen at once."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak_kib, self.processes = interval, 0, 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            pids = tree_pids(me)
            self.peak_kib = max(self.peak_kib, sum(pss_kib(p) for p in pids))
            self.processes = max(self.processes, len(pids))
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def split_of(root: Path, n: int):
    """The 10,000-image test split, or train and test as one 60,000-image split."""
    from cnn_jax.data.streamed import FolderSource, StreamedSplit, folder_classes, list_folder

    classes = folder_classes(root)
    if n == 10_000:
        source, labels = list_folder(root, "test", classes)
    elif n == 60_000:
        parts = [list_folder(root, split, classes) for split in ("train", "test")]
        files = np.concatenate([np.char.add(f"{s.split}/".encode(), s.files) for s, _ in parts])
        source = FolderSource(str(root), ".", files, classes)  # names './train/<class>/<file>', ...
        labels = np.concatenate([labels for _, labels in parts])
    else:
        raise ValueError(f"n must be one of {SIZES}")
    return StreamedSplit(source, np.arange(len(source)), labels)


def test_only_folder(root: Path) -> Path:
    """A temporary image folder whose only split is a link to root/test."""
    work = Path(tempfile.mkdtemp(prefix="cifar10_test_only_"))
    (work / "test").symlink_to(Path(root).resolve() / "test", target_is_directory=True)
    return work


def run_case(case: dict) -> dict:
    """One case in this (fresh) process; what it reports."""
    root, n, kind = Path(case["folder"]), case["images"], case["kind"]
    from cnn_jax.data.loader import HostTransform, TrainReader, batches  # imported in every case: part of 'base'

    if kind == "read_image_folder":
        from cnn_jax.data.local_files import read_image_folder

        folder = test_only_folder(root) if n == 10_000 else root
        base = rss_mb()
        t0 = time.perf_counter()
        with TreeSampler() as sampler:
            dataset = read_image_folder("cifar10-jpeg", folder)
        seconds = time.perf_counter() - t0
        held = sum(split.images.nbytes for split in dataset.splits.values())
        count = sum(len(split.images) for split in dataset.splits.values())
        if folder != root:
            shutil.rmtree(folder)
        extra = {"array_mb": round(held / 2**20, 1)}
    else:
        split = split_of(root, n)
        count = len(split)
        base = rss_mb()
        t0 = time.perf_counter()
        if kind == "resident":
            with TreeSampler() as sampler:
                images = np.empty((len(split), 32, 32, 3), np.uint8)
                for p in range(len(split)):
                    images[p] = split.read(p)
            extra = {"array_mb": round(images.nbytes / 2**20, 1)}
        else:
            size = case["size"]
            transform = (
                HostTransform(shape=(32, 32, 3)) if size == 32 else HostTransform(size=size, random_resized_crop=True)
            )
            batch_size = case["batch_size"]
            steps = len(split) // batch_size
            order = np.random.default_rng(0).permutation(len(split))[None]
            reader = TrainReader(split, order, 0, steps, batch_size, (0, batch_size), transform, 0, False)
            seen = 0
            with TreeSampler() as sampler, batches(reader, 0, steps, case["workers"]) as iterator:
                for batch in iterator:
                    seen += len(batch["image"])
            if seen != steps * batch_size:
                raise RuntimeError(f"streamed {seen} images, expected {steps * batch_size}")
            extra = {"streamed": seen, "batch_mb": round(batch_size * int(np.prod(transform.output_shape)) / 2**20, 1)}
        seconds = time.perf_counter() - t0
    return {
        **case,
        "images": count,
        "seconds": round(seconds, 1),
        "base_rss_mb": base,
        "peak_rss_mb": kib_to_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
        "largest_worker_peak_rss_mb": kib_to_mb(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss),
        "peak_tree_pss_mb": kib_to_mb(sampler.peak_kib),
        "processes": sampler.processes,
        **extra,
    }


def cases(opts) -> list[dict]:
    out = []
    for size in [int(s) for s in opts.sizes.split(",") if s]:
        for workers in [int(w) for w in opts.workers.split(",") if w != ""]:
            for n in SIZES:
                out.append({"kind": "stream", "size": size, "workers": workers, "images": n})
    for kind in ("resident", "read_image_folder"):
        for n in SIZES:
            out.append({"kind": kind, "size": 32, "workers": None, "images": n})
    return [{**c, "batch_size": opts.batch_size} for c in out]


def label(c: dict) -> str:
    if c["kind"] == "stream":
        return f"stream {c['size']}x{c['size']}, workers {c['workers']}"
    return f"{c['kind']} 32x32"


def table(results: list[dict]) -> str:
    lines = [
        f"{'case':28s} {'images':>7s} {'seconds':>7s} {'base MB':>8s} {'peak RSS MB':>11s} {'worker MB':>9s} "
        f"{'tree PSS MB':>11s} {'peak - base':>11s}"
    ]
    for r in results:
        worker = f"{r['largest_worker_peak_rss_mb']:9,.0f}" if r["kind"] == "stream" and r["workers"] else f"{'-':>9s}"
        lines.append(
            f"{label(r):28s} {r['images']:7,d} {r['seconds']:7.1f} {r['base_rss_mb']:8,.0f} {r['peak_rss_mb']:11,.0f} "
            f"{worker} {r['peak_tree_pss_mb']:11,.0f} {r['peak_rss_mb'] - r['base_rss_mb']:11,.0f}"
        )
    return "\n".join(lines)


def growth(results: list[dict]) -> list[dict]:
    """Per case kind: the peak at 60,000 minus the peak at 10,000."""
    out = []
    for r10 in results:
        if r10["images"] != 10_000:
            continue
        for r60 in results:
            if r60["images"] == 60_000 and all(r60[k] == r10[k] for k in ("kind", "size", "workers")):
                out.append(
                    {
                        "case": label(r10),
                        "peak_rss_growth_mb": round(r60["peak_rss_mb"] - r10["peak_rss_mb"], 1),
                        "peak_tree_pss_growth_mb": round(r60["peak_tree_pss_mb"] - r10["peak_tree_pss_mb"], 1),
                    }
                )
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="an extracted image folder (default: the archive)")
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts of the streamed cases")
    parser.add_argument("--sizes", default="32,224", help="comma-separated image sizes of the streamed cases")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "stream_memory.json")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    opts = parse_args()
    if opts.case is not None:
        print(RESULT_PREFIX + json.dumps(run_case(json.loads(opts.case))), flush=True)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import loader_speed  # the folder and machine helpers

    root, temporary = loader_speed.image_folder(opts.folder)
    results = []
    try:
        loader_speed.warm_page_cache(root, ("train", "test"))
        for case in cases(opts):
            args = [sys.executable, str(Path(__file__).resolve()), "--case", json.dumps({**case, "folder": str(root)})]
            proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=1800)
            line = next((x for x in proc.stdout.splitlines() if x.startswith(RESULT_PREFIX)), None)
            if line is None:
                raise RuntimeError(f"case {case} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            result = json.loads(line[len(RESULT_PREFIX) :])
            result.pop("folder")
            results.append(result)
            print(table([result]).splitlines()[-1], flush=True)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    print(
        "\nPeak memory per case, each in a fresh process. base: resident set after imports and listing; peak RSS: "
        "the process's own (ru_maxrss); worker: the largest worker's peak RSS; tree PSS: peak of the summed "
        "proportional set size of the process and its workers (shared memory counted once)\n"
    )
    print(table(results))
    grown = growth(results)
    print("\ngrowth of the peak from 10,000 to 60,000 images:")
    for g in grown:
        print(
            f"  {g['case']:28s} RSS {g['peak_rss_growth_mb']:+8.1f} MB   "
            f"tree PSS {g['peak_tree_pss_growth_mb']:+8.1f} MB"
        )
    record = {
        "benchmark": "stream_memory",
        "command": [Path(sys.executable).name, *sys.argv],
        "data": {
            "folder": str(opts.folder) if opts.folder else f"{loader_speed.ARCHIVE} (extracted to a temporary folder)",
            "10000": "the test split",
            "60000": "train and test listed as one split",
        },
        "batch_size": opts.batch_size,
        "cases": results,
        "growth_10k_to_60k": grown,
        "resident_224_would_need_mb": {str(n): round(n * BYTES_224 / 2**20, 1) for n in SIZES},
        "machine": loader_speed.machine_info(("cnn_jax", "grain", "numpy", "pillow")),
    }
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nwrote {opts.out}")


if __name__ == "__main__":
    main()

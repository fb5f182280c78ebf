"""Input-pipeline speed alone (read + decode + crop, no model): cnn_jax's streamed loader vs PyTorch's DataLoader.

    python benchmarks/loader_speed.py [--folder DIR] [--workers 0,1,2] [--loaders cnn_jax,torch]
        [--settings train32,train224,eval224] [--batch-size 128] [--batches-32 150] [--batches-224 40]
        [--repeats 3] [--seed 0] [--quiet-wait 600] [--out benchmarks/results/loader_speed.json]

Data: the CIFAR-10 JPEG image folder (train/<class>/*.jpg, 50,000 files of 32x32), extracted from
/work/shared/data/cifar10-jpeg/cifar10-jpeg.tgz into a temporary folder unless --folder names an
extracted copy. Each run first reads the files it will decode, so both loaders read from the page cache
(a machine may drop a file's cached pages a minute after its last read: this one's kernel runs DAMON
pageout, and a first read of a CIFAR file costs ~30 us more than a cached one, ~20% of a 32x32 decode).

Both loaders read the same JPEG files of the train split in the same random order (one permutation,
`--seed`), in batches of --batch-size, with the same number of workers:

  cnn_jax  `cnn_jax.data.loader.batches(reader, 0, 1 + N, workers)` over a `TrainReader` (an `EvalReader`
           over the split taken in that order for eval224): grain, `workers` spawned worker processes
           that hand batches over in shared memory, or for 0, one background thread of the calling process;
  torch    `torch.utils.data.DataLoader(dataset, batch_size, sampler=<the permutation>, num_workers=workers)`,
           default collate (forked workers; 0 = in the calling process). Its Dataset's `__getitem__` opens
           the file with PIL (`Image.open(path).convert("RGB")`) and applies the same `HostTransform`
           method with the same per-example random numbers (`example_rng(seed, 0, position)`, drawn only
           where the transform is random, as cnn_jax's reader does), so the per-image work is the same
           (cnn_jax's `FolderSource.read` also opens the file with PIL) and the comparison is of the loader
           machinery; the first batch of both is checked to be the same bytes.

Settings: train32, 32x32 as stored (`HostTransform(shape=(32, 32, 3))`: decode only); train224,
`HostTransform(size=224, random_resized_crop=True)` (torchvision's RandomResizedCrop to 224, bilinear,
with PIL); eval224, the evaluation transform (shorter side resized to 256, central 224x224 crop).
For each (setting, loader, workers) and each of --repeats runs, a fresh process times the start-up
(from building the loader to holding the first batch) and then the images/s over the following N
batches (--batches-32 for train32, --batches-224 for the 224 settings); the median of the repeats is
reported (on the machine this was written on, fresh processes running the same loop differ by up to
~15%, one process to the next). The 'serial' row calls each side's per-batch function (`reader(step)`;
default_collate of `dataset[i]` for torch) in a plain loop in one thread: the per-image work without
any loader.

Also recorded per run: the CPU cores the loader's processes (the process and its workers) used during
the window, and those used by any other process; a run starts only once other processes are idle
(--quiet-wait) and is run again (at most twice) when another process kept more than 0.3 cores busy
during its window: on a small machine a concurrent test run would otherwise be measured too.

The loader is judged "at least as fast as PyTorch's DataLoader with equal workers", per setting and
worker count, on steady-state images/s (the `ratio` column: cnn_jax / torch). Prints a table and
writes benchmarks/results/loader_speed.json with the machine (CPU model, cores), package versions
and date.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from train_step_speed import cpu_model  # a sibling script: benchmarks/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = Path("/work/shared/data/cifar10-jpeg/cifar10-jpeg.tgz")
SETTINGS = ("train32", "train224", "eval224")
LOADERS = ("cnn_jax", "torch")
VERSION_PACKAGES = ("cnn_jax", "grain", "torch", "numpy", "pillow")
RESULT_PREFIX = "RESULT "


# ----------------------------------------------------------------------------- shared helpers (stream_memory.py)


def machine_info(packages: tuple[str, ...] = VERSION_PACKAGES) -> dict:
    from PIL import features

    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo")),
        "git_commit": commit,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def cpu_busy_seconds() -> float:
    """CPU seconds all processes of the machine have spent busy since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system) of process `pid` (default: this one) and its live descendants."""
    pid = os.getpid() if pid is None else pid
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        rest = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        parent[int(entry)] = int(rest[1])
        cpu[int(entry)] = (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    total, frontier = 0.0, [pid]
    while frontier:
        p = frontier.pop()
        total += cpu.get(p, 0.0)
        frontier += [c for c, pp in parent.items() if pp == p]
    return total


def other_load(seconds: float = 1.0) -> float:
    """Cores kept busy by other processes over the next `seconds`."""
    busy0, t0 = cpu_busy_seconds(), time.perf_counter()
    time.sleep(seconds)
    return (cpu_busy_seconds() - busy0) / (time.perf_counter() - t0)


def wait_for_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (at most `max_wait` s) until other processes keep fewer than `threshold` cores busy; the last
    load seen (a benchmark on a 2-core machine shared with a test run would measure the test run)."""
    deadline = time.monotonic() + max_wait
    while True:
        load = other_load()
        if load < threshold or time.monotonic() >= deadline:
            return load
        print(f"  (other processes keep {load:.1f} cores busy: waiting)", flush=True)
        time.sleep(4.0)


def image_folder(folder: Path | None) -> tuple[Path, Path | None]:
    """(root of the image folder, temporary directory to remove or None): --folder, else the archive
    extracted into a fresh temporary directory."""
    if folder is not None:
        return Path(folder), None
    work = Path(tempfile.mkdtemp(prefix="cifar10_jpeg_"))
    t0 = time.perf_counter()
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(work, filter="data")
    print(f"extracted {ARCHIVE} into {work} in {time.perf_counter() - t0:.1f} s", flush=True)
    return work, work


def warm_page_cache(root: Path, splits: tuple[str, ...]) -> int:
    """Read every file of `splits` once (so every timed read hits the page cache); returns the bytes read."""
    total = 0
    for split in splits:
        for path in sorted((root / split).glob("*/*")):
            total += len(path.read_bytes())
    return total


def train_split(root: Path, split: str = "train"):
    from cnn_jax.data.streamed import StreamedSplit, folder_classes, list_folder

    source, labels = list_folder(root, split, folder_classes(root))
    return StreamedSplit(source, np.arange(len(source)), labels)


def run_worker(script: Path, args: dict, timeout: float = 900) -> dict:
    """Run `script --worker <args>` in a fresh process; its RESULT line as a dict."""
    proc = subprocess.run(
        [sys.executable, str(script), "--worker", json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(f"worker {args} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def quiet_run(script: Path, args: dict, quiet_wait: float, attempts: int = 3, threshold: float = 0.3) -> dict:
    """run_worker once other processes are idle; again (up to `attempts` times) when another process was
    busy during the timed window. The result says how many runs were discarded."""
    discarded = 0
    while True:
        wait_for_quiet(quiet_wait, threshold)
        result = run_worker(script, args)
        if result["other_cores"] <= threshold or discarded + 1 >= attempts:
            return {**result, "discarded_runs": discarded}
        print(f"  (another process used {result['other_cores']:.1f} cores during the window: run again)", flush=True)
        discarded += 1


# ----------------------------------------------------------------------------- one measurement (worker process)


def transform_of(setting: str):
    from cnn_jax.data.loader import HostTransform

    if setting == "train32":
        return HostTransform(shape=(32, 32, 3))
    return HostTransform(size=224, random_resized_crop=setting == "train224")


def torch_loader(split, order: np.ndarray, setting: str, seed: int, batch_size: int, workers: int):
    """A DataLoader over the files of `split` in `order`, doing per image what cnn_jax's readers do."""
    import torch
    from PIL import Image

    from cnn_jax.data.loader import example_rng

    transform = transform_of(setting)
    train = setting != "eval224"

    class FolderImages(torch.utils.data.Dataset):
        def __init__(self):
            self.paths = [str(Path(split.source.root) / split.name(p)) for p in range(len(split))]
            self.labels = split.labels

        def __len__(self) -> int:
            return len(self.paths)

        def __getitem__(self, p: int):
            with Image.open(self.paths[p]) as img:
                image = np.asarray(img.convert("RGB"))
            if train and transform.random:  # as TrainReader: random numbers only where the transform draws any
                image = transform.train(image, example_rng(seed, 0, p))
            else:
                image = transform.eval(image)
            return image, int(self.labels[p])

    dataset = FolderImages()
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=order.tolist(), num_workers=workers, shuffle=False
    )
    return dataset, loader


def cnn_jax_reader(split, order: np.ndarray, setting: str, seed: int, batch_size: int):
    from cnn_jax.data.loader import EvalReader, TrainReader

    transform = transform_of(setting)
    if setting == "eval224":
        return EvalReader(split.take(order), batch_size, (0, batch_size), transform, False)
    return TrainReader(
        split, order[None], 0, len(split) // batch_size, batch_size, (0, batch_size), transform, seed, False
    )


def batch_digest(images) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(images)).tobytes()).hexdigest()[:16]


def timed_window(iterator, n: int, batch_size: int, t0: float, image_of) -> dict:
    """Take the first batch (start-up: from `t0`) and then `n` more from `iterator`, timing them, and the
    CPU our process tree and other processes used meanwhile."""
    first = next(iterator)
    t_first = time.perf_counter()
    cpu0, busy0, t1 = tree_cpu_seconds(), cpu_busy_seconds(), time.perf_counter()
    for _ in range(n):
        next(iterator)
    t2 = time.perf_counter()
    cpu1, busy1 = tree_cpu_seconds(), cpu_busy_seconds()
    if next(iterator, None) is not None:
        raise RuntimeError(f"more than {n + 1} batches")
    window = t2 - t1
    return {
        "first_batch_s": t_first - t0,
        "images_per_s": n * batch_size / window,
        "window_s": window,
        "our_cores": (cpu1 - cpu0) / window,
        "other_cores": max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / window,
        "first_batch_sha256": batch_digest(image_of(first)),
    }


def measure(args: dict) -> dict:
    """One timed run of one loader: start-up, images/s over the window, CPU use, first batch's digest."""
    setting, loader, workers = args["setting"], args["loader"], args["workers"]
    batch_size, n = args["batch_size"], args["batches"]
    split = train_split(Path(args["folder"]))
    if (n + 1) * batch_size > len(split):
        raise ValueError(f"{n + 1} batches of {batch_size} exceed the split's {len(split)} images")
    order = np.random.default_rng(args["seed"]).permutation(len(split))[: (n + 1) * batch_size]
    for p in order:  # the page cache may have dropped them since the last run (see the module's docstring)
        (Path(split.source.root) / split.name(int(p))).read_bytes()

    if workers == "serial":  # the per-batch function in a loop in this thread, no loader
        if loader == "cnn_jax":
            one = cnn_jax_reader(split, order, setting, args["seed"], batch_size)
        else:
            from torch.utils.data import default_collate

            dataset, _ = torch_loader(split, order, setting, args["seed"], batch_size, 0)

            def one(i):
                batch = default_collate([dataset[int(p)] for p in order[i * batch_size : (i + 1) * batch_size]])
                return {"image": batch[0]}

        return timed_window(map(one, range(n + 1)), n, batch_size, time.perf_counter(), lambda b: b["image"])

    if loader == "cnn_jax":
        from cnn_jax.data.loader import batches

        reader = cnn_jax_reader(split, order, setting, args["seed"], batch_size)
        t0 = time.perf_counter()
        with batches(reader, 0, n + 1, workers) as iterator:
            return timed_window(iterator, n, batch_size, t0, lambda b: b["image"])
    _, data = torch_loader(split, order, setting, args["seed"], batch_size, workers)
    t0 = time.perf_counter()
    return timed_window(iter(data), n, batch_size, t0, lambda b: b[0])


# ----------------------------------------------------------------------------- driver


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=None, help="an extracted image folder (default: the archive)")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    parser.add_argument("--loaders", default=",".join(LOADERS), help=f"comma-separated, of {', '.join(LOADERS)}")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--no-serial", action="store_true", help="skip the serial (no loader) rows")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches-32", type=int, default=150, help="timed batches after the first, train32")
    parser.add_argument("--batches-224", type=int, default=40, help="timed batches after the first, 224 settings")
    parser.add_argument("--repeats", type=int, default=3, help="fresh-process runs; the median is reported")
    parser.add_argument("--seed", type=int, default=0, help="the permutation and the crops' random numbers")
    parser.add_argument(
        "--quiet-wait", type=float, default=600, help="seconds to wait, before each run, for other processes to idle"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "loader_speed.json")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def summarize(runs: list[dict]) -> dict:
    return {
        "first_batch_s": round(statistics.median(r["first_batch_s"] for r in runs), 3),
        "images_per_s": round(statistics.median(r["images_per_s"] for r in runs), 1),
        "our_cores": round(statistics.median(r["our_cores"] for r in runs), 2),
        "other_cores_max": round(max(r["other_cores"] for r in runs), 2),
        "discarded_runs": sum(r["discarded_runs"] for r in runs),
        "repeats_images_per_s": [round(r["images_per_s"], 1) for r in runs],
        "repeats_first_batch_s": [round(r["first_batch_s"], 3) for r in runs],
        "first_batch_sha256": runs[0]["first_batch_sha256"],
    }


def table(rows: list[dict]) -> str:
    """One line per (setting, workers): each loader's median img/s, start-up and CPU cores used in the window;
    '*' marks a row where another process kept more than 0.3 cores busy during some window."""
    lines = [
        f"{'setting':9s} {'workers':>7s} | {'cnn_jax img/s':>13s} {'first s':>7s} {'cores':>5s} | "
        f"{'torch img/s':>11s} {'first s':>7s} {'cores':>5s} | {'ratio':>5s}  same batch"
    ]

    def cells(r: dict | None, width: int) -> str:
        if r is None:
            return f"{'-':>{width}s} {'-':>7s} {'-':>5s}"
        return f"{r['images_per_s']:{width},.0f} {r['first_batch_s']:7.2f} {r['our_cores']:5.2f}"

    for row in rows:
        c, t = row.get("cnn_jax"), row.get("torch")
        ratio = f"{row['ratio']:5.2f}" if "ratio" in row else "    -"
        same = ("yes" if row["same_first_batch"] else "NO") if "same_first_batch" in row else "-"
        busy = " *" if max(r["other_cores_max"] for r in (c, t) if r) > 0.3 else ""
        lines.append(
            f"{row['setting']:9s} {row['workers']!s:>7s} | {cells(c, 13)} | {cells(t, 11)} | {ratio}  {same}{busy}"
        )
    return "\n".join(lines)


def main() -> None:
    opts = parse_args()
    if opts.worker is not None:
        print(RESULT_PREFIX + json.dumps(measure(json.loads(opts.worker))), flush=True)
        return
    root, temporary = image_folder(opts.folder)
    try:
        t0 = time.perf_counter()
        size = warm_page_cache(root, ("train",))
        print(f"read the train split once ({size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s", flush=True)
        workers = [int(w) for w in opts.workers.split(",") if w != ""]
        workers = workers if opts.no_serial else ["serial", *workers]
        loaders = [name for name in opts.loaders.split(",") if name]
        rows = []
        for setting in [s for s in opts.settings.split(",") if s]:
            n = opts.batches_32 if setting == "train32" else opts.batches_224
            for w in workers:
                row = {"setting": setting, "workers": w, "batches": n}
                runs = {name: [] for name in loaders}
                for _ in range(opts.repeats):  # loaders alternate, so drift in the machine's speed hits both
                    for name in loaders:
                        args = {
                            "folder": str(root),
                            "setting": setting,
                            "loader": name,
                            "workers": w,
                            "batch_size": opts.batch_size,
                            "batches": n,
                            "seed": opts.seed,
                        }
                        runs[name].append(quiet_run(Path(__file__).resolve(), args, opts.quiet_wait))
                for name in loaders:
                    row[name] = summarize(runs[name])
                if "cnn_jax" in row and "torch" in row:
                    row["ratio"] = round(row["cnn_jax"]["images_per_s"] / row["torch"]["images_per_s"], 3)
                    row["same_first_batch"] = row["cnn_jax"]["first_batch_sha256"] == row["torch"]["first_batch_sha256"]
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)

    print(
        f"\n{os.cpu_count()} CPU cores ({cpu_model()}), batch {opts.batch_size}, median of {opts.repeats} "
        f"fresh-process runs; img/s over {opts.batches_32} (32x32) / {opts.batches_224} (224) batches after the "
        "first; 'first s': start-up to the first batch; 'cores': CPU cores the loader's processes used in the "
        "window; ratio = cnn_jax / torch img/s; * = another process was busy (> 0.3 cores) in some window\n"
    )
    print(table(rows))
    record = {
        "benchmark": "loader_speed",
        "command": [Path(sys.executable).name, *sys.argv],
        "data": {
            "folder": str(opts.folder) if opts.folder else f"{ARCHIVE} (extracted to a temporary folder)",
            "split": "train",
            "images": 50_000,
        },
        "batch_size": opts.batch_size,
        "repeats": opts.repeats,
        "seed": opts.seed,
        "settings": {
            "train32": "HostTransform(shape=(32, 32, 3)): decode only",
            "train224": "HostTransform(size=224, random_resized_crop=True): random-resized crop to 224, bilinear",
            "eval224": "HostTransform(size=224): shorter side to 256, central 224x224",
        },
        "rows": rows,
        "machine": machine_info(),
    }
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nwrote {opts.out}")


if __name__ == "__main__":
    main()

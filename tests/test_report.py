"""`cnn_jax.analysis.report` on synthetic sweep directories written by hand in the launcher's format."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import scipy.stats
from PIL import Image

from cnn_jax.analysis import report, stats
from cnn_jax.errors import UserError

STEPS_PER_EPOCH, EPOCHS = 2, 3


def manifest(commit: str = "c0ffee", resumes: list | None = None) -> dict:
    return {
        "started": "2025-01-01T00:00:00+00:00",
        "packages": {"jax": "0.4.35", "numpy": "2.1.0"},
        "git": {"commit": commit, "dirty": False},
        "device": {"backend": "cpu", "count": 1, "kind": "cpu", "host": "box", "python": "3.11.9"},
        "command": ["cnn-jax", "train"],
        "run_id": "x",
        "resumes": resumes or [],
        "data": {
            "name": "fashion_mnist",
            "source": "tfds",
            "fingerprints": {"train": "aa11", "test": "bb22"},
            "sizes": {"train": 60000, "test": 10000},
            "train_examples_used": 60000,
        },
    }


def write_run(
    exp: Path,
    run_id: str,
    seed: int,
    accuracy: float | None,
    params: int = 1000,
    stop_epoch: float = EPOCHS,
    commit: str = "c0ffee",
    first_step: int = 0,
    loop_seconds: float = 10.0,
):
    """A run directory; accuracy None leaves it unfinished at `stop_epoch`."""
    run = exp / run_id
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"experiment": exp.name, "seed": seed}))
    (run / "manifest.json").write_text(json.dumps(manifest(commit)))
    final = accuracy if accuracy is not None else 0.5
    records = []
    for step in range(1, int(stop_epoch * STEPS_PER_EPOCH) + 1):
        epoch = step / STEPS_PER_EPOCH
        record = {
            "step": step,
            "epoch": epoch,
            "lr": 0.1,
            "train_loss": 2.0 / step,
            "train_accuracy": 0.5,
            "images_per_sec": 100.0,
        }
        if step % STEPS_PER_EPOCH == 0:
            record.update(
                val_loss=1.0 / epoch,
                val_accuracy=final * epoch / EPOCHS + 0.01,
                val_top5=0.99,
                test_loss=1.0 / epoch,
                test_accuracy=final * epoch / EPOCHS,
                test_top5=0.99,
                epoch_train_loss=0.5,
            )
        records.append(record)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if accuracy is not None:
        (run / "result.json").write_text(
            json.dumps(
                {
                    "run_id": run_id,
                    "experiment": exp.name,
                    "model": "seed_cnn",
                    "dataset": "fashion_mnist",
                    "seed": seed,
                    "steps": EPOCHS * STEPS_PER_EPOCH,
                    "epochs": EPOCHS,
                    "final": {
                        "test_loss": 1.0 - accuracy,
                        "test_accuracy": accuracy,
                        "test_top5": 0.99,
                        "val_accuracy": accuracy + 0.01,
                    },
                    "val_best": {"step": 4, "test_loss": 0.2, "test_accuracy": accuracy + 0.001, "test_top5": 0.99},
                    "data_fingerprints": {"train": "aa11", "test": "bb22"},
                    "compile_seconds": 1.0,
                    "loop_seconds": loop_seconds,
                    "images_per_sec_median": 500.0 + seed,
                    "first_step": first_step,
                    "model_summary": {"params": params, "trainable_params": params, "flops": 2_500_000},
                }
            )
        )


def write_sweep(
    exp: Path,
    accuracies: dict[tuple[str, int], float | None],
    axis: str = "downsample",
    baseline: str = "max",
    preset: str = "cpu",
    options: dict | None = None,
) -> dict:
    """A single-axis sweep over the (level, seed) pairs of `accuracies`, in that order (`options`: per run)."""
    levels = list(dict.fromkeys(level for level, _ in accuracies))
    runs = []
    for index, ((level, seed), accuracy) in enumerate(accuracies.items()):
        run_id = f"{index:04d}{level}{seed}"
        runs.append(
            {
                "index": index,
                "name": f"{axis}={level},seed={seed}",
                "variant": f"{axis}={level}",
                "levels": {axis: level},
                "seed": seed,
                "run_id": run_id,
            }
        )
        write_run(
            exp,
            run_id,
            seed,
            accuracy,
            params=1000 + 10 * levels.index(level),
            **(options or {}).get((level, seed), {}),
        )
    sweep = {
        "experiment": exp.name,
        "experiment_file": f"experiments/{exp.name}.py",
        "preset": preset,
        "question": "Does max-pool beat avg-pool and strided conv?",
        "axes": [{"name": axis, "levels": {lv: {f"model.{axis}": lv} for lv in levels}}],
        "combine": "product",
        "seeds": sorted({s for _, s in accuracies}),
        "baseline": {axis: baseline},
        "overrides": {"train.epochs": EPOCHS},
        "command": f"./launch.sh experiments/{exp.name}.py {preset}",
        "runs": runs,
    }
    exp.mkdir(parents=True, exist_ok=True)
    (exp / f"sweep-{preset}.json").write_text(json.dumps(sweep))
    return sweep


ACCURACIES = {
    ("avg", 0): 0.91,
    ("avg", 1): 0.93,
    ("avg", 2): 0.92,
    ("max", 0): 0.90,
    ("max", 1): 0.91,
    ("max", 2): 0.92,
    ("stride", 0): 0.88,
    ("stride", 1): 0.89,
    ("stride", 2): None,
}


def build(exp: Path) -> dict:
    sweep = report.load_sweep(exp)
    return report.build_report(sweep, report.load_runs(sweep, exp))


def test_variant_table_numbers(tmp_path):
    exp = tmp_path / "pool_vs_stride"
    write_sweep(exp, ACCURACIES)
    data = build(exp)
    names = [v["variant"] for v in data["variants"]]
    assert names == ["downsample=max", "downsample=avg", "downsample=stride"]  # baseline first, then sweep order
    base, avg, stride = data["variants"]
    assert base["baseline"] and not avg["baseline"]
    assert (base["finished"], base["planned"], stride["finished"], stride["planned"]) == (3, 3, 2, 3)
    assert base["final_accuracy"]["mean"] == pytest.approx(91.0)
    assert base["final_accuracy"]["std"] == pytest.approx(1.0)
    half = scipy.stats.t.ppf(0.975, 2) * 1.0 / 3**0.5
    assert base["final_accuracy"]["ci"] == pytest.approx([91.0 - half, 91.0 + half])
    assert base["selected_accuracy"]["mean"] == pytest.approx(91.1)
    assert base["final_loss"]["mean"] == pytest.approx(0.09)
    assert stride["final_accuracy"]["n"] == 2 and stride["final_accuracy"]["mean"] == pytest.approx(88.5)
    assert (base["params"], avg["params"], base["flops"]) == (1010, 1000, 2_500_000)
    assert base["train_seconds_median"] == 10.0 and base["images_per_sec_median"] == 501.0
    assert data["finished"] == 8 and data["planned"] == 9


def test_pairs_by_seed_and_reports_missing_runs(tmp_path):
    exp = tmp_path / "pool_vs_stride"
    write_sweep(exp, ACCURACIES)
    data = build(exp)
    paired = {(p["variant"], p["metric"]): p for p in data["paired"]}
    assert set(paired) == {
        ("downsample=avg", "final_accuracy"),
        ("downsample=avg", "final_loss"),
        ("downsample=stride", "final_accuracy"),
        ("downsample=stride", "final_loss"),
    }
    avg = paired["downsample=avg", "final_accuracy"]
    assert avg["reference"] == "downsample=max" and avg["n"] == 3 and avg["seeds"] == [0, 1, 2]
    assert avg["mean"] == pytest.approx(1.0)
    assert avg["p_value"] == pytest.approx(scipy.stats.ttest_rel([91, 93, 92], [90, 91, 92]).pvalue)
    stride = paired["downsample=stride", "final_accuracy"]
    assert stride["n"] == 2 and stride["seeds"] == [0, 1] and stride["mean"] == pytest.approx(-2.0)
    loss = paired["downsample=stride", "final_loss"]
    assert loss["mean"] == pytest.approx(0.02) and loss["p_value"] is None  # equal differences: no t-test
    assert data["missing"] == [
        {"name": "downsample=stride,seed=2", "run_id": "0008stride2", "state": "unfinished, last logged epoch 3.00"}
    ]


def test_unstarted_and_interrupted_runs_are_missing(tmp_path):
    exp = tmp_path / "e"
    write_sweep(
        exp,
        {("max", 0): 0.9, ("max", 1): 0.91, ("avg", 0): 0.92, ("avg", 1): None},
        options={("avg", 1): {"stop_epoch": 1.5}},
    )
    with open(exp / "0003avg1" / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "epo')  # killed in the middle of a line
    sweep = json.loads((exp / "sweep-cpu.json").read_text())
    sweep["runs"].append(
        {
            "index": 4,
            "name": "downsample=avg,seed=2",
            "variant": "downsample=avg",
            "levels": {"downsample": "avg"},
            "seed": 2,
            "run_id": "notyet",
        }
    )
    (exp / "sweep-cpu.json").write_text(json.dumps(sweep))
    data = build(exp)
    assert [m["state"] for m in data["missing"]] == ["unfinished, last logged epoch 1.50", "not started"]
    avg = data["variants"][1]
    assert (avg["finished"], avg["planned"]) == (1, 3)
    assert avg["final_accuracy"]["std"] is None and avg["final_accuracy"]["ci"] is None
    only_pair = data["paired"][0]
    assert only_pair["n"] == 1 and only_pair["p_value"] is None and only_pair["bootstrap_ci"] is None
    markdown = report.render_markdown(data)
    assert "| 92.00 ± — |" in markdown
    assert "`downsample=avg,seed=2` (notyet, not started)" in markdown


def test_write_report_files(tmp_path):
    exp = tmp_path / "pool_vs_stride"
    write_sweep(exp, ACCURACIES)
    result = report.write_report(exp)
    out = exp / "report-cpu"
    assert set(result.paths) == set(report.FILES)
    assert all(path.parent == out and path.stat().st_size > 0 for path in result.paths.values())
    assert (out / "report.md").read_text() == result.markdown
    for name in ("learning_curves.png", "intervals.png"):
        with Image.open(out / name) as image:
            image.verify()
            assert image.format == "PNG"
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["variant"] for r in rows] == ["downsample=max", "downsample=avg", "downsample=stride"]
    assert float(rows[0]["final_accuracy_mean"]) == pytest.approx(91.0) and rows[2]["finished"] == "2"
    with open(out / "paired.csv", newline="") as f:
        paired = list(csv.DictReader(f))
    assert len(paired) == 4 and paired[0]["n"] == "3" and float(paired[0]["mean"]) == pytest.approx(1.0)
    saved = json.loads((out / "report.json").read_text())
    assert saved["variants"][0]["final_accuracy"]["mean"] == pytest.approx(91.0)
    md = result.markdown
    assert md.startswith("# Does max-pool beat avg-pool and strided conv?\n")
    assert "| downsample=max (baseline) | 3/3 | 91.00 ± 1.00 [" in md
    assert "**Missing:** 1 run(s)" in md and "downsample=stride,seed=2" in md
    assert "./launch.sh experiments/pool_vs_stride.py cpu" in md
    assert "git c0ffee (clean)" in md and "runs differ" not in md
    assert "jax 0.4.35" in md and "train sha256 aa11" in md and "cpu ×1 (cpu) on box" in md


def test_report_of_a_sweep_with_nothing_finished(tmp_path):
    exp = tmp_path / "e"
    write_sweep(exp, {("max", 0): None, ("avg", 0): None})
    result = report.write_report(exp)
    assert result.data["finished"] == 0 and len(result.data["missing"]) == 2
    assert result.data["variants"][0]["final_accuracy"] == {"n": 0, "mean": None, "std": None, "ci": None, "values": []}
    assert "| downsample=max (baseline) | 0/1 | — | — | — | — | — | — | — |" in result.markdown
    assert all(path.exists() for path in result.paths.values())


def test_write_report_to_chosen_dir_from_the_sweep_file(tmp_path):
    exp = tmp_path / "e"
    write_sweep(exp, {("max", 0): 0.9, ("avg", 0): 0.91}, preset="gpu")
    result = report.write_report(exp / "sweep-gpu.json", out_dir=tmp_path / "out")
    assert result.paths["report.md"] == tmp_path / "out" / "report.md" and result.paths["report.md"].exists()


def test_latex_is_escaped(tmp_path):
    exp = tmp_path / "e"
    write_sweep(
        exp,
        {("max_pool", 0): 0.9, ("max_pool", 1): 0.92, ("avg_pool", 0): 0.91, ("avg_pool", 1): 0.95},
        axis="down_sample",
        baseline="max_pool",
    )
    data = build(exp)
    summary, paired = report.latex_table(*report.summary_table(data)), report.latex_table(*report.paired_table(data))
    assert r"down\_sample=max\_pool (baseline)" in summary
    assert r"95\% CI" in paired and r"$\pm$" in summary and r"$\Delta$" in paired
    for text in (summary, paired):
        body = [line for line in text.splitlines() if not line.startswith("%")]
        cells = [cell for line in body for cell in line.split(" & ")]
        assert not [cell for cell in cells if re.search(r"(?<!\\)[_%&#]|[±—−Δ]", cell)]
        assert body[1] == r"\toprule" and body[-2] == r"\bottomrule"
    assert (
        report.latex_escape("50% of a_b & {c} $x$ ~ ^")
        == r"50\% of a\_b \& \{c\} \$x\$ \textasciitilde{} \textasciicircum{}"
    )


def test_multi_axis_compares_one_axis_at_a_time(tmp_path):
    exp = tmp_path / "grid"
    exp.mkdir()
    runs, baseline = [], {"downsample": "max", "width": "1"}
    for index, (down, width) in enumerate([("max", "1"), ("avg", "1"), ("max", "2"), ("avg", "2")]):
        levels = {"downsample": down, "width": width}
        variant = f"downsample={down},width={width}"
        runs.append(
            {
                "index": index,
                "name": f"{variant},seed=0",
                "variant": variant,
                "levels": levels,
                "seed": 0,
                "run_id": f"r{index}",
            }
        )
        write_run(exp, f"r{index}", 0, 0.9 + index / 100)
    sweep = {"experiment": "grid", "preset": "cpu", "seeds": [0], "baseline": baseline, "runs": runs}
    data = report.build_report(sweep, report.load_runs(sweep, exp))
    pairs = {(p["variant"], p["axis"], p["reference"]) for p in data["paired"] if p["metric"] == "final_accuracy"}
    assert pairs == {
        ("downsample=avg,width=1", "downsample", "downsample=max,width=1"),
        ("downsample=max,width=2", "width", "downsample=max,width=1"),
        ("downsample=avg,width=2", "downsample", "downsample=max,width=2"),
        ("downsample=avg,width=2", "width", "downsample=avg,width=1"),
    }
    assert data["title"] == "grid"  # no question: the experiment names the report


def test_provenance_differences_and_resumes_are_shown(tmp_path):
    exp = tmp_path / "e"
    write_sweep(
        exp,
        {("max", 0): 0.9, ("max", 1): 0.91, ("avg", 0): 0.92, ("avg", 1): 0.93},
        options={("avg", 1): {"commit": "beef00", "first_step": 3, "loop_seconds": 2.0}},
    )
    data = build(exp)
    assert data["variants"][1]["train_seconds_median"] == 10.0 and data["variants"][1]["resumed_runs"] == 1
    assert data["provenance"]["code"] == {
        "git c0ffee (clean)": ["downsample=max,seed=0", "downsample=max,seed=1", "downsample=avg,seed=0"],
        "git beef00 (clean)": ["downsample=avg,seed=1"],
    }
    assert "**runs differ:** git c0ffee (clean)" in report.render_markdown(data)


def test_finding_the_sweep_file(tmp_path):
    exp = tmp_path / "e"
    with pytest.raises(UserError, match="does not exist"):
        report.load_sweep(exp)
    exp.mkdir()
    with pytest.raises(UserError, match="no sweep-<preset>.json"):
        report.load_sweep(exp)
    write_sweep(exp, {("max", 0): 0.9}, preset="cpu")
    write_sweep(exp, {("avg", 0): 0.9}, preset="gpu")
    with pytest.raises(UserError, match=r"several presets \(cpu, gpu\): pass --preset NAME"):
        report.load_sweep(exp)
    with pytest.raises(UserError, match="Did you mean 'gpu'"):
        report.load_sweep(exp, "gpux")
    assert report.load_sweep(exp, "gpu")["preset"] == "gpu"
    assert report.load_sweep(exp / "sweep-cpu.json")["preset"] == "cpu"


def test_formulation_of_each_run_is_in_the_provenance(tmp_path):
    exp = tmp_path / "e"
    write_sweep(exp, {("max", 0): 0.9, ("avg", 0): 0.92})
    manifests = sorted(exp.rglob("manifest.json"))
    assert len(manifests) == 2
    for path, formulation in zip(manifests, ("tuned", "plain")):
        info = json.loads(path.read_text())
        info["tuning"] = {
            "formulation": formulation,
            "xla_flags": "--x=1" if formulation == "tuned" else "",
            "xla_flags_not_in_effect": [],
        }
        path.write_text(json.dumps(info))
    data = build(exp)
    assert sorted(data["provenance"]["formulation"]) == ["plain, XLA_FLAGS ''", "tuned, XLA_FLAGS '--x=1'"]
    assert "**runs differ:** " in report.render_markdown(data).split("- Formulation:")[1].splitlines()[0]


def test_the_provenance_says_whether_convolutions_ran_on_onednn(tmp_path):
    exp = tmp_path / "e"
    write_sweep(exp, {("max", 0): 0.9, ("avg", 0): 0.92})
    for path, on in zip(sorted(exp.rglob("manifest.json")), (True, False)):
        info = json.loads(path.read_text())
        detail = "/x/libcnn_jax_onednn.so (oneDNN 3.2.0, linux)" if on else "switched off by CNN_JAX_NO_ONEDNN"
        flags = {"formulation": "tuned", "xla_flags": "", "xla_flags_not_in_effect": []}
        info["tuning"] = {**flags, "onednn_convolutions": on, "onednn_detail": detail}
        path.write_text(json.dumps(info))
    assert sorted(build(exp)["provenance"]["formulation"]) == [
        "tuned, XLA_FLAGS ''; CPU convolutions: XLA",
        "tuned, XLA_FLAGS ''; CPU convolutions: oneDNN (oneDNN 3.2.0)",
    ]


def test_paired_rows_carry_holm_and_power(tmp_path):
    exp = tmp_path / "e"
    levels = {"max": (0.90, 0.91, 0.92), "avg": (0.91, 0.93, 0.92), "stride": (0.88, 0.895, 0.87)}
    levels["none"] = (0.89, 0.90, 0.91)  # every difference -1 pp: no test, so not in the family
    write_sweep(exp, {(level, seed): acc for level, accs in levels.items() for seed, acc in enumerate(accs)})
    result = report.write_report(exp)
    paired = result.data["paired"]
    for metric in report.PAIRED_METRICS:
        family = [p for p in paired if p["metric"] == metric]
        assert [p["variant"] for p in family] == ["downsample=avg", "downsample=stride", "downsample=none"]
        assert [p["p_holm"] for p in family] == pytest.approx(stats.holm([p["p_value"] for p in family]))
        assert family[0]["p_holm"] > family[0]["p_value"] and family[2]["p_holm"] is None
    for p in paired:
        if p["p_value"] is None:
            assert p["mdd"] is None and p["seeds_needed"] is None
        else:
            assert p["mdd"] == pytest.approx(stats.minimum_detectable_difference(p["n"], p["std"]))
            assert p["seeds_needed"] == stats.seeds_needed(p["mean"], p["std"])
    avg = paired[0]
    assert avg["metric"] == "final_accuracy" and avg["std"] == pytest.approx(1.0)  # percentage points, as shown
    assert avg["mdd"] == pytest.approx(stats.minimum_detectable_difference(3, 1.0))
    with open(result.paths["paired.csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["p_holm"]) == pytest.approx(avg["p_holm"]) and rows[0]["seeds_needed"] == "10"
    assert float(rows[0]["mdd"]) == pytest.approx(avg["mdd"]) and rows[4]["p_holm"] == ""
    assert "| p (Holm) |" in result.markdown and "| MDD (80%) | seeds for Δ |" in result.markdown
    assert "**p (Holm)**" in result.markdown and "**MDD (80%)**" in result.markdown
    assert r"MDD (80\%) & seeds for $\Delta$" in result.paths["paired.tex"].read_text()


def test_runs_evaluated_on_a_subset_are_flagged(tmp_path):
    exp = tmp_path / "pool_vs_stride"
    write_sweep(exp, ACCURACIES)
    assert build(exp)["eval_subsets"] == []
    assert "evaluated on a subset" not in report.render_markdown(build(exp))
    path = next(exp.glob("0000*/manifest.json"))
    record = json.loads(path.read_text())
    record["data"]["eval_subset"] = 500
    path.write_text(json.dumps(record))
    data = build(exp)
    assert data["eval_subsets"] == [500]
    assert "**Warning: evaluated on a subset** of 500 examples per split" in report.render_markdown(data)

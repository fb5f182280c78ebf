# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 4. An ablation: max-pooling vs strided convolutions, read cell by cell
#
# The course asks whether a network needs pooling layers at all (seed 004; Springenberg et al. 2014,
# "Striving for Simplicity"). An honest answer compares the two at their own best learning rate, over
# several seeds, with the uncertainty stated. This notebook runs a small version of the README's main
# job (`experiments/pool_vs_stride.py`): two variants, a two-point learning-rate grid tuned on the
# validation split, then 3 seeds each, 1,500 Fashion-MNIST images for 2 epochs (60 steps). About 2.5
# minutes of a 2-core CPU. Runs this short and this few cannot settle the question (the confidence
# intervals below say so); the main job's runs are larger.

# %%
import tempfile
import textwrap
from pathlib import Path

from IPython.display import Image, Markdown, display

import cnn_jax

folder = Path(tempfile.mkdtemp(prefix="cnn_jax_notebook_"))

# %% [markdown]
# ## The experiment file: one question, one axis, the nuisance tuned
#
# `get_config` is the shared recipe; `get_sweep` names the axis (what changes between the variants), the
# seeds, and the tuning grid (what each variant may choose for itself, on the validation split).

# %%
experiment = folder / "pool_or_stride.py"
experiment.write_text(
    textwrap.dedent(
        """
        from cnn_jax.config import default_config
        from cnn_jax.sweep.plan import Axis, Sweep, Tuning, field_axis


        def get_config(preset="default"):
            c = default_config()
            c.experiment = "pool_or_stride"
            c.model.name = "ablation_net"
            c.model.stages = 2
            c.model.width = 16
            c.dataset.train_subset = 1500
            c.dataset.validation_fraction = 0.05
            c.optimizer.name = "adam"
            c.train.batch_size = 50
            c.train.epochs = 2
            c.train.log_every_steps = 10
            c.schedule.warmup_epochs = 0.25
            return c


        def get_sweep(preset="default"):
            downsample = Axis(
                "downsample",
                {"max": {"model.downsample": "max"}, "strided_conv": {"model.downsample": "strided_conv"}},
            )
            rates = field_axis("lr", "optimizer.lr", (3e-3, 1e-2))
            return Sweep(axes=(downsample,), seeds=(0, 1, 2), tuning=Tuning(axes=(rates,), seeds=(100,)))
        """
    )
)

# %% [markdown]
# ## Running it
#
# The tuning runs go first (each variant at each rate, tuning seed 100), then the final seeds run at the
# rate each variant chose. Finished runs are never trained twice: running the cell again only rebuilds
# the report.

# %%
result = cnn_jax.run_sweep(experiment, runs_root=folder / "runs", jobs=2)
report = result.report
print(f"{len(result.plan.runs)} runs, failed: {len(result.failed)}")

# %% [markdown]
# ## What each variant chose
#
# A choice at the edge of its grid says the grid was too narrow: the report warns about it.

# %%
for variant, choice in result.plan.choices.items():
    print(variant, choice.levels, f"mean validation accuracy {choice.mean:.4f}")

# %% [markdown]
# ## The variants table
#
# Each cell is a mean over the seeds with its sample standard deviation and the 95% confidence
# interval of the mean. "Test acc. at best val." is the test accuracy of the checkpoint the validation
# split selected: nothing is ever chosen on the test split.

# %%
for row in report.data["variants"]:
    final = row["final_accuracy"]
    print(
        f"{row['variant']:26s} {final['mean']:.2f} +- {final['std']:.2f}% over {final['n']} seeds, "
        f"95% CI [{final['ci'][0]:.2f}, {final['ci'][1]:.2f}], {row['params']:,} params"
    )

# %% [markdown]
# ## The paired comparison
#
# Runs of the same seed share their initialization and data order, so the difference is taken seed by
# seed; the p-value is corrected for the number of comparisons (Holm), and the minimum detectable
# difference says how large an effect these seeds could have found.

# %%
for row in report.data["paired"]:
    ci = "-" if row["ci"] is None else f"[{row['ci'][0]:+.2f}, {row['ci'][1]:+.2f}]"
    print(
        f"{row['variant']} - {row['reference']} ({row['metric']}, {row['n']} seeds): {row['mean']:+.2f}, "
        f"95% CI {ci}, Holm p = {row['p_holm']:.3f}, minimum detectable difference {row['mdd']:.2f}"
    )

# %% [markdown]
# ## The whole report, as it would be cited

# %%
display(Markdown(report.markdown))
curves = [p for p in report.paths.values() if p.suffix == ".png"]
for picture in curves:
    display(Image(filename=str(picture)))

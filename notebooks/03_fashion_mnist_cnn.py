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
# # 3. Seed 002's CNN on Fashion-MNIST: learning curves, filters, feature maps
#
# The course's Keras CNN (`seed_cnn`: three 3x3 convolutions of 64-128-256 filters, two max-poolings,
# global average pooling, a dense head) trained on 6,000 Fashion-MNIST images for 2 epochs, so that the
# notebook runs in about 1.5 minutes of a 2-core CPU (about 76% test accuracy). The full recipe
# (`experiments/fashion_mnist_cnn.py`, all 54,000 training images, 8 epochs) reaches about 91.7% test
# accuracy in 11 minutes.
#
# Fashion-MNIST is read from a local copy (`../shared/data`, `$CNN_JAX_LOCAL_DATA`, or Debian's
# `dataset-fashion-mnist`), imported once into the TFDS data dir.

# %%
import tempfile

import matplotlib.pyplot as plt
from IPython.display import Image, display

import cnn_jax
from cnn_jax.analysis.features import plot_features, plot_filters

RUNS = tempfile.mkdtemp(prefix="cnn_jax_notebook_")  # a folder of your own keeps the run

# %%
config = cnn_jax.get_config(
    "experiments/fashion_mnist_cnn.py", "quick", {"dataset.train_subset": 6000, "experiment": "notebook_fashion"}
)
cnn_jax.summary("seed_cnn", (28, 28, 1))

# %% [markdown]
# ## Training
#
# 10% of every class of the training split is held out as the validation split: it alone selects the
# best checkpoint. The test split is evaluated after every epoch for the curves, never to choose.

# %%
run = cnn_jax.run(config, runs_root=RUNS, log=print)
run

# %% [markdown]
# ## Learning curves
#
# The training metrics are means over each logging interval (about 9 steps here) while the weights
# change; validation and test are measured at each epoch's end.

# %%
history = run.history
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
epochs = [r["epoch"] for r in history]
left.plot(epochs, [r["epoch_train_loss"] for r in history], "o-", label="train (epoch mean)")
left.plot(epochs, [r["val_loss"] for r in history], "s-", label="validation")
left.plot(epochs, [r["test_loss"] for r in history], "^--", label="test")
left.set(xlabel="epoch", ylabel="loss", title="loss")
right.plot(epochs, [r["epoch_train_accuracy"] for r in history], "o-", label="train (epoch mean)")
right.plot(epochs, [r["val_accuracy"] for r in history], "s-", label="validation")
right.plot(epochs, [r["test_accuracy"] for r in history], "^--", label="test")
right.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
left.legend()
plt.show()
print(
    f"final test accuracy {100 * run.final['test_accuracy']:.2f}%; at the best validation checkpoint "
    f"(step {run.selected['step']}): {100 * run.selected['test_accuracy']:.2f}%"
)

# %% [markdown]
# ## What the first layer learned
#
# The 64 filters of the first convolution, each 3x3 on the single grey channel.

# %%
filters = plot_filters(run.run_dir, out=f"{RUNS}/filters.png")
display(Image(filename=str(filters.path)))

# %% [markdown]
# ## Feature maps: the hierarchy of features
#
# One test image through the trained network: the first convolution responds to edges and contrasts,
# deeper layers to larger, more abstract parts, at lower resolution.

# %%
features = plot_features(run.run_dir, test_index=0, paths=cnn_jax.data_paths(), out=f"{RUNS}/features.png")
print("prediction:", features.prediction)
display(Image(filename=str(features.path)))

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
# # 2. The curriculum's networks, from LeNet-5 to ResNet
#
# Their layer tables, parameter counts, FLOPs and receptive fields, as Keras' `model.summary()` shows them
# in the course. `cnn_jax.summary` traces the model abstractly: nothing is computed, so even VGG-16 at
# 224x224 is summarized in seconds. CPU time on a 2-core laptop: about 15 s.

# %%
import matplotlib.pyplot as plt

import cnn_jax

# %% [markdown]
# ## LeNet-5: two convolutions, two poolings, three dense layers
#
# Parameter counts below are the trainable ones (the published figures); batch-norm statistics are
# counted apart in the tables as non-trainable.
#
# RF is the receptive field of one output pixel in input pixels, and jump the distance in input pixels
# between neighbouring outputs: pooling doubles the jump, and each 5x5 convolution widens the field by
# 4 jumps.

# %%
cnn_jax.summary("lenet5")

# %% [markdown]
# ## Seed 002's CNN on Fashion-MNIST, and the same CNN on CIFAR-10's colour images
#
# Global average pooling makes the head independent of the image size: only the first convolution's
# parameters change with 3 input channels.

# %%
grey, colour = cnn_jax.summary("seed_cnn", (28, 28, 1)), cnn_jax.summary("seed_cnn", (32, 32, 3))
print(grey)
print(f"\n28x28x1: {grey.total_params:,} params; 32x32x3: {colour.total_params:,} params")

# %% [markdown]
# ## From AlexNet to ResNet at ImageNet's 224x224 (227 for AlexNet)
#
# VGG's parameters sit mostly in its dense head; GoogLeNet and ResNet replace it by global average
# pooling, and GoogLeNet's 1x1 convolutions keep its inception modules cheap.

# %%
networks = {
    "alexnet": (227, 227, 3),
    "vgg16": (224, 224, 3),
    "googlenet": (224, 224, 3),
    "resnet18": (224, 224, 3),
    "resnet50": (224, 224, 3),
}
rows = []
for name, shape in networks.items():
    table = cnn_jax.summary(name, shape, 1000)
    dense = sum(r.params for r in table.rows if r.kind == "Dense")
    rows.append((name, table.trainable_params, dense, table.flops, len(table.rows)))
    print(
        f"{name:10s} {table.trainable_params:>12,} params ({100 * dense / table.trainable_params:4.1f}% dense), "
        f"{table.flops / 1e9:5.1f} GFLOPs per image, {len(table.rows)} layers"
    )

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for name, params, _, flops, _ in rows:
    ax.scatter(flops / 1e9, params / 1e6)
    ax.annotate(name, (flops / 1e9, params / 1e6))
ax.set_xlabel("GFLOPs per 224x224 image (a multiply-add counts 2)")
ax.set_ylabel("parameters (millions)")
ax.set_title("Size and cost of the curriculum's ImageNet networks")
plt.show()

# %% [markdown]
# ## The CIFAR ResNets: depth at almost constant width
#
# He et al. (2015, Sec. 4.2) grow ResNet from 20 to 110 layers with 16-32-64 channels; the parameter
# count grows linearly with depth.

# %%
for depth in (20, 32, 44, 56, 110):
    table = cnn_jax.summary(f"resnet{depth}")
    print(f"resnet{depth:<4d} {table.trainable_params:>10,} params, {table.flops / 1e6:7.1f} MFLOPs per 32x32 image")

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
# # 1. Convolution, padding, stride and pooling, by hand
#
# The course's worked examples (seeds 000-003), recomputed with numpy and then with the project's own
# layers, and seed 001's classic kernels on a picture. CPU time on a 2-core laptop: about 15 s.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from cnn_jax.analysis.kernels import CLASSIC_KERNELS, apply_kernel
from cnn_jax.models.layers import ConvUnit, Downsample, identity


def apply(module, x, params=None):
    """Run a flax layer on x, with the given parameters instead of random ones."""
    variables = module.init(jax.random.PRNGKey(0), x)
    return np.asarray(module.apply({"params": params} if params is not None else variables, x))


# %% [markdown]
# ## A convolution is a sliding weighted sum
#
# Seed 003's binary image and 3x3 filter, without padding ('valid'): each output pixel is the sum of the
# 3x3 patch times the filter. First by hand with numpy, then with `ConvUnit`.

# %%
image = np.array(
    [
        [0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 0],
        [1, 1, 0, 0, 1, 0, 0],
        [0, 1, 0, 1, 0, 0, 0],
        [0, 1, 1, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ],
    np.float32,
)
kernel = np.array([[0, 0, 0], [0, 1, 1], [0, 1, 0]], np.float32)
by_hand = np.array([[np.sum(image[i : i + 3, j : j + 3] * kernel) for j in range(5)] for i in range(5)])
conv = ConvUnit(1, 3, padding="VALID", act=identity, use_bias=False)
layer = apply(conv, image[None, :, :, None], {"Conv_0": {"kernel": kernel[:, :, None, None]}})[0, :, :, 0]
print(by_hand.astype(int))
assert np.array_equal(by_hand, layer)

# %% [markdown]
# ## Colour images: one filter per channel, summed, plus a bias
#
# Seed 002's 5x5 RGB patch with one pixel of zero padding: the three channels give 308, -498 and 164,
# and with the bias of 1 the output pixel is -25.

# %%
red = [[156, 155, 156, 158, 158], [153, 154, 157, 159, 159], [149, 151, 155, 158, 159], [146, 146, 149, 153, 158]]
red += [[145, 143, 143, 148, 158]]
green = [[167, 166, 167, 169, 169], [164, 165, 168, 170, 170], [160, 162, 166, 169, 170], [156, 156, 159, 163, 168]]
green += [[155, 153, 153, 158, 168]]
blue = [[163, 162, 163, 165, 165], [160, 161, 164, 166, 166], [156, 158, 162, 165, 166], [155, 155, 158, 162, 167]]
blue += [[154, 152, 152, 157, 167]]
filters = [
    [[-1, -1, 1], [0, 1, -1], [0, 1, 1]],
    [[1, 0, 0], [1, -1, -1], [1, 0, -1]],
    [[0, 1, 1], [0, 1, 0], [1, -1, 1]],
]
rgb = np.stack([np.array(c, np.float32) for c in (red, green, blue)], -1)
weights = np.stack([np.array(f, np.float32) for f in filters], -1)[..., None]  # (3, 3, in 3, out 1)
padded = np.pad(rgb, ((1, 1), (1, 1), (0, 0)))
per_channel = [float(np.sum(padded[:3, :3, c] * weights[:, :, c, 0])) for c in range(3)]
out = apply(ConvUnit(1, 3, padding=1, act=identity), rgb[None], {"Conv_0": {"kernel": weights, "bias": np.ones(1)}})
print(per_channel, "+ bias 1 =", out[0, 0, 0, 0])
assert per_channel == [308, -498, 164] and out[0, 0, 0, 0] == -25

# %% [markdown]
# ## Output size: (W - F + 2P) / S + 1
#
# AlexNet's first layer (227 pixels, 11x11 filters, stride 4, no padding) gives 55; 'same' padding keeps
# the size at stride 1. The layer computes the same sizes as the formula.

# %%
for size, f, s, p in [(227, 11, 4, 0), (27, 5, 1, 2), (13, 3, 1, 1), (28, 3, 1, 0), (32, 3, 2, 1)]:
    formula = (size - f + 2 * p) // s + 1
    got = apply(ConvUnit(1, f, stride=s, padding=p), np.zeros((1, size, size, 1), np.float32)).shape[1]
    print(f"W={size:3d} F={f:2d} S={s} P={p}: formula {formula:3d}, layer {got:3d}")
    assert got == formula

# %% [markdown]
# ## Pooling: max or mean of each window
#
# Seed 000's 4x4 example with 2x2 windows and stride 2.

# %%
x = np.array([[1, 2, 0, 2], [1, 4, 2, 0], [4, 3, 1, 0], [1, 2, 2, 1]], np.float32).reshape(1, 4, 4, 1)
maxed, averaged = apply(Downsample("max"), x)[0, :, :, 0], apply(Downsample("avg"), x)[0, :, :, 0]
print("max:\n", maxed, "\naverage:\n", averaged)
assert maxed.tolist() == [[4, 2], [4, 2]] and averaged.tolist() == [[2, 1], [2.5, 1]]

# %% [markdown]
# ## Classic kernels on a picture (seed 001)
#
# Box blur, Gaussian blur and sharpen on a synthetic grey image with edges: blurs soften the edges,
# sharpening exaggerates them, and flat regions stay as they are.

# %%
yy, xx = np.mgrid[:64, :64]
picture = (((xx // 16 + yy // 16) % 2) * 160 + 40 + 30 * np.sin(xx / 5.0)).astype(np.uint8)[:, :, None]
fig, axes = plt.subplots(1, 1 + len(CLASSIC_KERNELS), figsize=(3 * (1 + len(CLASSIC_KERNELS)), 3))
axes[0].imshow(picture[:, :, 0], cmap="gray", vmin=0, vmax=255)
axes[0].set_title("original")
for ax, (name, k) in zip(axes[1:], CLASSIC_KERNELS.items()):
    ax.imshow(np.asarray(apply_kernel(jnp.asarray(picture), jnp.asarray(k)))[:, :, 0], cmap="gray", vmin=0, vmax=255)
    ax.set_title(name)
for ax in axes:
    ax.axis("off")
plt.show()

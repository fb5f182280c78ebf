"""The Fashion-MNIST README's benchmark row "2 Conv+pooling, preprocessing None, 0.916" (TensorFlow's doc).

zalandoresearch/fashion-mnist, README.md, section Benchmark, row
`|2 Conv+pooling | None | 0.916| - |[Tensorflow's doc](https://www.tensorflow.org/tutorials/layers) |
[:link:](/benchmark/convnet.py)|`;
its code, benchmark/convnet.py: conv 5x5 32 SAME + ReLU, max-pool 2x2, conv 5x5 64 SAME + ReLU,
max-pool 2x2, dense 1024 + ReLU, dropout 0.4, dense 10; plain SGD at 0.001, batch 400.

Here: `ablation_net` with 2 stages of one 5x5 conv (32, 64 channels), max pooling and the MLP head
with dropout 0.4 — the same layers except the hidden dense layer, which has 256 units in the
registry's MLP head instead of 1024 (857,738 parameters instead of 3,274,634). The recipe differs
too: convnet.py trains 100 x 2,000 steps of batch 400 (about 1,300 epochs) with plain SGD, out of
reach of a CPU; here Adam 1e-3 with cosine decay for 10 epochs, no augmentation (as the row), and
inputs standardized by the pipeline (convnet.py scales them to [0, 1]).
The registry `experiments/expected.toml` compares with 91.6% (entry `fashion_mnist_readme_2conv`).

Presets:
  default  10 epochs, batch 128, Adam 1e-3, cosine decay, no augmentation.
"""

from pathlib import Path

from cnn_jax.config import load_module

PRESETS = ("default",)
recipes = load_module(Path(__file__).with_name("_recipes.py"))


def get_config(preset: str = "default"):
    config = recipes.warmup_cosine(
        "fashion_mnist_tf_convnet",
        "fashion_mnist",
        "ablation_net",
        optimizer="adam",
        lr=1e-3,
        weight_decay=0.0,
        warmup_epochs=0.0,
        epochs=10,
    )
    config.model.stages = 2
    config.model.convs_per_stage = 1
    config.model.width = 32
    config.model.kernel_scheme = "5x5"
    config.model.downsample = "max"
    config.model.head = "mlp"
    config.model.dropout = 0.4
    return config

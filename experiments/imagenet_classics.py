"""The curriculum's ImageNet architectures trained on ImageNet-style data, streamed from disk (seeds 001 and
003): ResNet-50 vs GoogLeNet vs VGG-16 (with batch norm), each from scratch with ImageNet's augmentation
(random-resized crop to the input size and a horizontal flip; evaluation: resize to size / 0.875 and a
central crop). The data never sits in memory: images are decoded batch by batch on the host
(`dataset.source = stream`, data/loader.py), in the same order a resident run would use.

Presets:
  cpu         a CPU rehearsal of the same code path: the CIFAR-10 JPEG copy read as an image folder,
              random-resized crops to 64x64, 2,000 training images, 2 epochs, one seed, a fixed rate. It
              checks that everything runs; its accuracies mean nothing.
  imagenette  Imagenette (10 easy ImageNet classes, 9,469 train / 3,925 val images; fast.ai), at 160x160:
              40 epochs of SGD with Nesterov momentum, cosine decay after 2 warm-up epochs, label
              smoothing 0.1, bfloat16; each model at its own rate tuned on the validation split (held out of
              train, tuning seed 100), then 3 seeds. Expected on one A100/H100-class GPU: a few minutes a run
              (the model steps at several thousand images/s at 160x160; the 8 decoding workers set the pace)
              and, as an estimate not yet measured with this project, about 85-90% top-1 for ResNet-50.
  imagenet    ILSVRC-2012 at 224x224 (its public 'val' folder is the reported split; 1% of train is held out
              to select checkpoints): the classic 90-epoch recipe, SGD momentum 0.9, rate divided by 10 at
              epochs 30, 60 and 80, weight decay 1e-4, batch 256, bfloat16, one seed. Published top-1 of these
              recipes (torchvision's model documentation, 1-crop 224): ResNet-50 76.1%, VGG-16-BN 73.4%,
              GoogLeNet 69.8%. Time on one GPU: NVIDIA's ResNet-50 v1.5 reference reaches 2,470 images/s on an
              A100 80GB in mixed precision, about 14 hours for 90 epochs (NVIDIA DeepLearningExamples,
              PyTorch/Classification/ConvNets/resnet50v1.5); by FLOPs, GoogLeNet takes about half of that and
              VGG-16 about four times as long. Not measured with this project. Decoding full-size ImageNet JPEGs
              at that rate needs about 16-24 host cores (dataset.workers).

Get the data: Imagenette's `imagenette2-320.tgz` (https://github.com/fastai/imagenette) unpacks to
`imagenette2-320/train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG`; ImageNet's train and val folders in the same
layout (val sorted into class folders) under a folder named `imagenet2012`. Put either under
$CNN_JAX_LOCAL_DATA, or prepare the TFDS datasets `imagenette` / `imagenet2012` as array_record where
TensorFlow can download them and copy the data dir here. Nothing is downloaded.
"""

from pathlib import Path

from cnn_jax.config import load_module
from cnn_jax.sweep.plan import Axis, Sweep, Tuning, field_axis

PRESETS = ("cpu", "imagenette", "imagenet")
recipes = load_module(Path(__file__).with_name("_recipes.py"))

MODELS = Axis(
    "model",
    {
        "resnet50": {"model.name": "resnet50"},
        "googlenet": {"model.name": "googlenet", "model.aux_heads": True},  # trained with its two aux classifiers
        "vgg16_bn": {"model.name": "vgg16_bn"},  # plain VGG-16 needs the paper's staged initialization
    },
)
DATASETS = {"cpu": "cifar10", "imagenette": "imagenette", "imagenet": "imagenet2012"}
SIZES = {"cpu": 64, "imagenette": 160, "imagenet": 224}


def get_config(preset: str = "cpu"):
    if preset == "imagenet":
        config = recipes.sgd_step(
            "imagenet_classics",
            "imagenet2012",
            "resnet50",
            lr=0.1,
            weight_decay=1e-4,
            boundaries_epochs=(30.0, 60.0, 80.0),
            epochs=90,
        )
        config.train.batch_size = 256
        config.dataset.validation_fraction = 0.01
        config.dataset.workers = 16
        config.train.log_every_steps = 100
        config.checkpoint.every_steps = 2000
    else:
        config = recipes.warmup_cosine(
            "imagenet_classics",
            DATASETS[preset],
            "resnet50",
            optimizer="sgd",
            lr=0.1 if preset == "imagenette" else 0.05,
            weight_decay=5e-5,
            epochs=40 if preset == "imagenette" else 2,
            warmup_epochs=2.0 if preset == "imagenette" else 0.5,
            batch_size=128 if preset == "imagenette" else 50,
        )
        config.optimizer.nesterov = True
        config.loss.label_smoothing = 0.1
        if preset == "imagenette":
            config.train.compute_dtype = "bfloat16"
            config.dataset.workers = 8
        else:
            config.dataset.train_subset = 2000
            config.dataset.eval_subset = 1000
            config.train.eval_batch_size = 500
    config.dataset.source = "stream"
    config.dataset.image_size = SIZES[preset]
    config.dataset.augment.random_resized_crop = True
    config.dataset.augment.horizontal_flip = True
    return config


def get_sweep(preset: str = "cpu") -> Sweep:
    if preset == "imagenette":
        rates = field_axis("lr", "optimizer.lr", (0.05, 0.1, 0.2))
        return Sweep(axes=(MODELS,), seeds=(0, 1, 2), tuning=Tuning(axes=(rates,), seeds=(100,)))
    if preset == "imagenet":  # torchvision's references train VGG at a tenth of ResNet's rate
        levels = {**MODELS.levels, "vgg16_bn": {**MODELS.levels["vgg16_bn"], "optimizer.lr": 0.01}}
        return Sweep(axes=(Axis("model", levels),), seeds=(0,))
    return Sweep(axes=(MODELS,), seeds=(0,))

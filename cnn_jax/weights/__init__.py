"""Pretrained weights from other frameworks' files: torchvision state dicts and Keras applications' .h5."""

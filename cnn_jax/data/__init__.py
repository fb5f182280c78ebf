"""Datasets: local readers, TFDS storage, the catalog that finds data, the device pipeline."""

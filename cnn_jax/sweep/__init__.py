"""Sweeps: expand an experiment file into runs, claim/skip/resume them, run them locally or on SLURM."""

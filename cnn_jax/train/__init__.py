"""Training: state, optimizers, losses, pure steps, and the loop."""

"""After-the-fact tools: they read finished runs and never train. Sweep reports and statistics,
plots, checkpoint inspection, export, pictures of filters and feature maps, and the classic kernels
of seed 001."""

"""The notebook side: figures, the latent-space explorer, exercises and their checks, shipped-or-live models."""

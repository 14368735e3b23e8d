"""diffcore: reproduction kit for DiffCoRe-Mix (context-guided responsible data augmentation with diffusion models)."""

__version__ = "0.1.0"

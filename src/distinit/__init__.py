"""DistInit: learn video representations by distilling still-image models."""

__version__ = "0.1.0"

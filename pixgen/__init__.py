"""pixgen: paint pictures by optimisation, guided by CLIP."""

__version__ = "0.1.0"

"""Shared model services: CLIP loading and cutouts, VQGAN loading, the weights cache."""

"""Backends implementing `ImageBackend`; only these modules import torch or diffusers."""

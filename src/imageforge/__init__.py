"""imageforge: a local-first image-generation service on one engine, for every client."""

__version__ = "0.1.0"

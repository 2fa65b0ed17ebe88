"""The engine: model catalog, the pool of loaded models, and the backends that run them."""

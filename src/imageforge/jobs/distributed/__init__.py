"""The job queue across machines: Celery as transport and worker supervisor, Redis for the shared state."""

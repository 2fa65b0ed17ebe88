"""Where images go: the output store (every result), the content-addressed cache (seeded results) and the
input store (queued jobs' input images)."""

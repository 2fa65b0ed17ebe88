"""Where images go: the output store (every result) and the content-addressed cache (seeded results)."""

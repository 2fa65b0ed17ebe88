"""Fault injection: a full or unwritable disk, kill -9 in each job state, a slow Ollama, a flood from one client.

Each test breaks one thing the way it breaks for a user and checks what the service then does (SECURITY.md has
the table of faults, answers and tests)."""

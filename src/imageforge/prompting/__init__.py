"""Prompting: prompt assist through a local LLM (Ollama), with a transparent passthrough fallback."""

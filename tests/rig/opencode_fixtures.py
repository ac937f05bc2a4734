"""Fixtures for the real OpenCode binary and the mock LLM."""

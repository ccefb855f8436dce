"""Thin adapters that give STA to models from other libraries (one file per model family)."""

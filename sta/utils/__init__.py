"""Helpers shared by several commands: devices and dtypes, optional dependencies, progress, distributed runs."""

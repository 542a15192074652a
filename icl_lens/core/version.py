"""The package version: one place, read by pyproject.toml, the report and study hashes."""

__version__ = "0.1.0"

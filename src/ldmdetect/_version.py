"""The package version, in one place: pyproject.toml reads it, ``ldmdetect.__version__``
re-exports it, and detector configs record it. A leaf module, so any stage can import it."""

__version__ = "0.1.0"

"""mailsuite: a traditional Unix mail system for a multi-user host."""

__version__ = "0.1.0"

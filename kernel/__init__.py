"""Shared kernel: the project's errors, pure domain rules and plain values (no I/O)."""

"""The plugins that ship with transferbench.

Each module here is written exactly as a third-party plugin would be: it imports only the
public API of :mod:`transferbench` and registers its classes through hooks.
"""

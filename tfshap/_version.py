"""The version, in a module of its own: the command line reads it without importing TensorFlow."""

__version__ = "0.1.0"

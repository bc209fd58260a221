"""The version of lens_steer, in a module of its own: every module that records it (the manifest, the report)
imports it from here, never from the package root, which imports everything else."""

__version__ = "0.1.0"

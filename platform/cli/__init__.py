"""The ``rlad`` command line: one module per command, shared flags in ``args``, entry point in ``main``."""

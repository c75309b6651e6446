"""Benchmarks of registered detectors: ``runs`` plans and dispatches, ``store`` records, ``report`` reports."""

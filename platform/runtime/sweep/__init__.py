"""``rlad bench``'s sweeps: registered detectors x data sets x label shares x seeds, each run a Ray
task; ``runs`` plans and dispatches, ``store`` records, ``report`` reports. (The repository's
``benchmarks/`` folder holds the project's own measurement scripts and their results files.)"""

"""Anomaly detectors and RL algorithms of rlad."""

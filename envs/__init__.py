"""Gymnasium environments of rlad."""

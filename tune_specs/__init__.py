"""Tune search specs shipped with rlad (YAML files beside this module) and their schema (``schema``)."""

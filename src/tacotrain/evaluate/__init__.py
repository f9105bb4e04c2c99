"""Evaluation of trained voices: hard-input sets and intelligibility checks."""

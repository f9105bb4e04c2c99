"""Judging a voice: the alignment metrics of an attention matrix, free-running synthesis of
items, the verdict on whether each reads its text, and the recogniser that hears it.

Below inference and training: it imports neither (tests/test_layers.py keeps it so).
"""

"""Corpus formats, preparation, the mini corpus and training data loading."""

"""``tacotrain corpus build``: long recordings (with or without their text) -> an LJSpeech corpus
that ``tacotrain prepare`` reads, with a report that accounts for every second of the input.

segment.py finds pauses; align.py puts a given text on the audio; transcribe.py reads clips
with a recogniser when there is no text; build.py runs the steps, caches them and writes the
corpus; report.py accounts for the seconds; page.py writes the listening page.
"""

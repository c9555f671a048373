"""Pieces several plugins share: a GPT-style decoder and real text to train it on."""

"""Runnable demos behind `keras-attention demo`; they train on generated data only."""

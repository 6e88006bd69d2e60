"""Functional-API model builders: each returns a `keras.Model` built from `keras_attention.layers`."""

__all__ = []

"""Primitives shared by the model files: embeddings, attention, normalisation, ResNet blocks."""

"""numpy-only building blocks: tiling, blending, normalization, metrics, synthetic data.

Nothing here imports torch, napari or Qt (enforced by import-linter).
"""

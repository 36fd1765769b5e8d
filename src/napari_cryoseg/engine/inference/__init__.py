"""A model applied to images: segmentation, uncertainty, evaluation, dask, bioimage.io weights.

Nothing here trains or imports :mod:`napari_cryoseg.engine.training`.
"""

"""napari-cryoseg: interactive U-Net segmentation of EM images in napari."""

__version__ = "0.1.0"

"""Reading images (TIFF, MRC) and writing/reading label TIFFs.

May import numpy, tifffile, mrcfile, dask, zarr and :mod:`napari_cryoseg.core`; never
torch, napari or Qt (enforced by import-linter).
"""

from napari_cryoseg.io.images import (
    IMAGE_SUFFIXES,
    ImageData,
    list_images,
    read_image,
    validate_image_array,
)
from napari_cryoseg.io.labels import (
    labels_output_path,
    read_labels_class_names,
    read_labels_tiff,
    write_labels_tiff,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageData",
    "labels_output_path",
    "list_images",
    "read_image",
    "read_labels_class_names",
    "read_labels_tiff",
    "validate_image_array",
    "write_labels_tiff",
]

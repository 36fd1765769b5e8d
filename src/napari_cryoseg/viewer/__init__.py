"""napari glue (no Qt): the per-viewer session and settings, layers in and out, the
review record of corrections, object measurements, and the viewer maths (camera,
world <-> data coordinates)."""

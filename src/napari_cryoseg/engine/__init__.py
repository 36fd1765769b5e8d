"""Long-running work (inference, training, fine-tuning) as cancellable generators.

Each engine function is a generator that yields typed events from
:mod:`napari_cryoseg.engine.events` and *returns* its result; close the generator
(or ``worker.quit()`` in napari) to cancel at the next yield. No napari or Qt here.

* :mod:`~napari_cryoseg.engine.inference` - a model applied to images: tiled
  segmentation and its settings, uncertainty, evaluation against ground truth, dask,
  bioimage.io weights, whether an image fits what a model was trained on;
* :mod:`~napari_cryoseg.engine.training` - models made or changed: the fit loop,
  training from masks or strokes, fine-tuning on corrections and the checks around it
  (held-out scoring, the change check, kept-elsewhere anchors), sampling, augmentation,
  losses, memory and step-time estimates;
* shared by both: :mod:`~napari_cryoseg.engine.events`, :mod:`~napari_cryoseg.engine.device`,
  :mod:`~napari_cryoseg.engine.classes` (label values, class indices, image/mask pairs)
  and :mod:`~napari_cryoseg.engine.jobs` (the jobs the dock and the CLI start).

Training imports inference (held-out scoring segments), never the other way round.
"""

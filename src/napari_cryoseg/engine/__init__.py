"""Long-running work (inference, training, fine-tuning) as cancellable generators.

Each engine function is a generator that yields typed events from
:mod:`napari_cryoseg.engine.events` and *returns* its result; close the generator
(or ``worker.quit()`` in napari) to cancel at the next yield. No napari or Qt here.
"""

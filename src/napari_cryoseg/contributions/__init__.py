"""npe2 contributions (reader, writer, sample data): thin wrappers over ``io`` and ``core``.

These modules must not import torch at module level: napari imports them to open a file
or a sample, which should not pay for (or require) the deep-learning stack.
"""

"""Tiled inference: seams, shapes, dtypes, stacks, dask, cancel, bad input."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch

from napari_cryoseg.core.errors import InputError
from napari_cryoseg.core.synthetic import make_sample
from napari_cryoseg.core.tiling import TilingConfig
from napari_cryoseg.engine.events import Progress, drain
from napari_cryoseg.engine.inference.predict import Segmenter, segment
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset


def _whole(image, model):
    """Reference: the whole image as one tile (no tiling at all)."""
    return drain(segment(image, model, TilingConfig(tile=4096, overlap=0.0),
                         return_probabilities=True, mixed_precision=False))


@pytest.mark.parametrize("shape", [(296, 408), (301, 411), (257, 263)])
@pytest.mark.parametrize(("tile", "overlap"), [(128, 0.5), (256, 0.25)])
def test_tiled_equals_whole_image_away_from_border(tiny_model, shape, tile, overlap):
    image, _ = make_sample(3)
    image = image[: shape[0], : shape[1]]
    whole = _whole(image, tiny_model)
    tiled = drain(segment(image, tiny_model, TilingConfig(tile, overlap, batch_size=3),
                          return_probabilities=True, mixed_precision=False))
    assert tiled.info["tiles"] > 1
    margin = 64
    diff = np.abs(whole.probabilities - tiled.probabilities)[0, margin:-margin, margin:-margin]
    assert diff.max() < 0.01, f"seam: max probability difference {diff.max():.4f}"
    agree = (whole.labels == tiled.labels)[margin:-margin, margin:-margin].mean()
    assert agree > 0.999


def test_no_overlap_has_seams_so_the_seam_test_can_fail(tiny_model):
    image, _ = make_sample(3)
    whole = _whole(image[:256, :384], tiny_model)
    tiled = drain(segment(image[:256, :384], tiny_model, TilingConfig(64, 0.0),
                          return_probabilities=True, mixed_precision=False))
    diff = np.abs(whole.probabilities - tiled.probabilities)[0, 64:-64, 64:-64]
    assert diff.max() > 0.01


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64, bool])
def test_dtypes_give_labels_of_input_shape(tiny_model, dtype):
    image, _ = make_sample(5)
    image = image[:100, :150]
    if dtype is bool:
        data = image > np.median(image)
    else:
        info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
        scaled = image.astype(np.float64) / image.max()
        data = (scaled * (info.max if info else 1.0)).astype(dtype)
    result = drain(segment(data, tiny_model, TilingConfig(64, 0.25)))
    assert result.labels.shape == data.shape
    assert result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) <= {0, 1}


def test_intensity_scale_invariance(tiny_model):
    """Percentile normalization: uint8 and the same image as uint16*257 agree."""
    image = (make_sample(2)[0][:128, :128] // 256).astype(np.uint8)
    a = drain(segment(image, tiny_model, TilingConfig(64, 0.25), return_probabilities=True,
                      mixed_precision=False))
    b = drain(segment(image.astype(np.uint16) * 257, tiny_model, TilingConfig(64, 0.25),
                      return_probabilities=True, mixed_precision=False))
    assert np.allclose(a.probabilities, b.probabilities, atol=1e-4)


def test_stack_equals_per_slice(tiny_model, rng):
    stack = rng.normal(100, 20, (3, 70, 90)).astype(np.float32)
    result = drain(segment(stack, tiny_model, TilingConfig(64, 0.25), return_probabilities=True))
    assert result.labels.shape == stack.shape
    assert result.probabilities.shape == (3, 1, 70, 90)
    assert np.isfinite(result.probabilities).all()
    # Each slice differs (slice-by-slice processing, not one slice repeated).
    assert not np.array_equal(result.probabilities[0], result.probabilities[1])


def test_dask_input_matches_numpy_and_is_not_loaded_whole(tiny_model):
    image, _ = make_sample(4)
    lazy = da.from_array(image, chunks=(64, 512))
    ref = drain(segment(image, tiny_model, TilingConfig(128, 0.25), mixed_precision=False))
    got = drain(segment(lazy, tiny_model, TilingConfig(128, 0.25), mixed_precision=False))
    assert np.array_equal(ref.labels, got.labels)


def test_multiclass_softmax_labels(rng):
    model = ModelFile.new(preset("tiny", n_classes=4), seed=1)
    image = rng.normal(size=(80, 96)).astype(np.float32)
    result = drain(segment(image, model, TilingConfig(64, 0.25), return_probabilities=True))
    assert result.probabilities.shape == (4, 80, 96)
    assert np.allclose(result.probabilities.sum(0), 1.0, atol=1e-4)
    assert np.array_equal(result.labels, result.probabilities.argmax(0))
    assert len(result.class_names) == 4


def test_progress_events_and_cancel_runs_cleanup(tiny_model, rng):
    image = rng.normal(size=(300, 300)).astype(np.float32)
    gen = segment(image, tiny_model, TilingConfig(64, 0.25, batch_size=1))
    events = [next(gen) for _ in range(3)]
    assert all(isinstance(e, Progress) for e in events)
    assert events[-1].done == 2 and events[-1].total > 10
    gen.close()  # cancel: no exception, generator finished
    with pytest.raises(StopIteration):
        next(gen)


def test_tiny_and_small_images_are_padded(tiny_model):
    for shape in [(2, 2), (5, 300), (33, 17)]:
        image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        result = drain(segment(image, tiny_model))
        assert result.labels.shape == shape


@pytest.mark.parametrize(
    ("image", "phrase"),
    [
        (np.zeros((2, 3, 4, 5), np.float32), "expected 2D"),
        (np.zeros((1, 10), np.float32), "too small"),
        (np.zeros((10, 10), np.complex64), "not supported"),
        (np.zeros((0, 10), np.float32), "too small"),
    ],
)
def test_bad_images_raise_clear_errors(tiny_model, image, phrase):
    with pytest.raises(InputError, match=phrase):
        drain(segment(image, tiny_model))


def test_nan_inf_and_constant_images_give_finite_output(tiny_model):
    image = np.full((70, 70), 7.0, np.float32)
    image[3, 3], image[4, 4], image[5, 5] = np.nan, np.inf, -np.inf
    result = drain(segment(image, tiny_model, return_probabilities=True))
    assert np.isfinite(result.probabilities).all()


def test_channel_mismatch_is_explained(rng):
    model = ModelFile.new(preset("tiny", in_channels=3))
    with pytest.raises(InputError, match="input channels"):
        drain(segment(rng.normal(size=(64, 64)), model))


def test_oom_halves_the_batch_and_completes(tiny_model, rng):
    """A simulated CUDA out-of-memory error on big batches: the run still completes."""
    segmenter = Segmenter(tiny_model, "cpu", mixed_precision=False)
    segmenter.max_batch = None  # as on a GPU: whole batches until memory runs out
    real_run = segmenter._run

    def run_with_memory_limit(batch):
        if batch.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("simulated: CUDA out of memory")
        return real_run(batch)

    segmenter._run = run_with_memory_limit
    image = rng.normal(size=(200, 200)).astype(np.float32)
    result = drain(segment(image, segmenter, TilingConfig(64, 0.25, batch_size=8)))
    reference = drain(segment(image, tiny_model, TilingConfig(64, 0.25, batch_size=8),
                              mixed_precision=False))
    assert segmenter.max_batch == 2
    assert np.array_equal(result.labels, reference.labels)


def test_mixed_precision_agrees_with_fp32(tiny_model):
    """bf16 (where the device runs it natively) changes labels only marginally."""
    image, _ = make_sample(6)
    fp32 = drain(segment(image, tiny_model, TilingConfig(256, 0.25), mixed_precision=False))
    mixed = drain(segment(image, tiny_model, TilingConfig(256, 0.25), mixed_precision=True))
    assert (fp32.labels == mixed.labels).mean() > 0.98


def _flip_rot_reference(image, model, k, flip):
    """Probabilities of the transformed image, transformed back (one tile, fp32)."""
    view = np.rot90(image, k) if k else image
    view = np.ascontiguousarray(view[:, ::-1] if flip else view)
    probs = _whole(view, model).probabilities[0]
    probs = probs[:, ::-1] if flip else probs
    return np.rot90(probs, -k) if k else probs


@pytest.mark.parametrize(("shape", "copies"), [((64, 64), 4), ((48, 80), 8)])
def test_tta_averages_flipped_and_rotated_predictions(tiny_model, shape, copies):
    image, _ = make_sample(5)
    image = image[: shape[0], : shape[1]]
    from napari_cryoseg.engine.inference.predict import TTA_TRANSFORMS

    expected = np.mean([_flip_rot_reference(image, tiny_model, k, flip)
                        for k, flip in TTA_TRANSFORMS[:copies]], axis=0)
    got = drain(segment(image, tiny_model, TilingConfig(tile=4096, overlap=0.0),
                        return_probabilities=True, mixed_precision=False, tta=copies))
    assert got.info["tta"] == copies
    np.testing.assert_allclose(got.probabilities[0], expected, atol=1e-5)
    plain = _whole(image, tiny_model).probabilities[0]
    assert np.abs(plain - expected).max() > 1e-3  # the copies really differ
    assert np.array_equal(got.labels, (expected > 0.5).astype(np.uint8))


def test_tta_must_be_a_supported_count(tiny_model):
    with pytest.raises(InputError, match="test-time augmentation 3 must be one of 1, 2, 4, 8"):
        Segmenter(tiny_model, "cpu", tta=3)


def test_class_argmax_matches_torch_argmax_with_ties():
    from napari_cryoseg.engine.inference.predict import _class_argmax

    probs = torch.rand(5, 37, 53)
    probs[3, :4] = probs[1, :4] = 2.0  # ties go to the lowest class, as argmax does
    expected = probs.argmax(dim=0).to(torch.int32)
    assert torch.equal(_class_argmax(probs), expected)
    assert (_class_argmax(probs)[:4] == 1).all()

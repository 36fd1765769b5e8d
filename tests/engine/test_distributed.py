"""Block-wise segmentation on a dask.distributed LocalCluster."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch

from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference import distributed as dist
from napari_cryoseg.engine.inference.predict import segment

distributed = pytest.importorskip("distributed")


def test_two_worker_cluster_matches_single_process(tmp_path):
    tiny_model = _tiny()
    image, _ = make_sample(0, SampleConfig(shape=(1500, 1500)))
    reference = drain(segment(image, tiny_model, device="cpu")).labels
    threads = torch.get_num_threads()
    try:
        # processes=False: workers are threads of this process (fast start, 1 thread each).
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            labels = dist.segment_distributed(
                da.from_array(image, chunks=500), tiny_model, None, client, block=768,
                device="cpu", torch_threads=1,
            )
            assert isinstance(labels, da.Array) and labels.chunks == ((768, 732),) * 2
            labels.to_zarr(str(tmp_path / "labels.zarr"))  # lazily stored block by block
    finally:
        torch.set_num_threads(threads)
    out = da.from_zarr(str(tmp_path / "labels.zarr")).compute()
    assert out.dtype == reference.dtype and out.shape == reference.shape
    # Blocks have their own tile grid, so blending weights differ near tile seams and
    # a few threshold-borderline pixels flip (measured 99.99 %).
    assert (out == reference).mean() >= 0.999
    assert len(dist._SEGMENTERS) >= 1  # built once per process, reused for all blocks


def test_margin_and_key(tiny_model):
    margin = dist.block_margin(tiny_model, tiny_model.tiling)
    overlap = round(tiny_model.tiling.tile * tiny_model.tiling.overlap)
    assert margin >= 2 * overlap and margin % tiny_model.config.stride == 0
    assert dist.model_key(tiny_model) == dist.model_key(tiny_model)
    assert len(dist.model_key(tiny_model)) == 16


def test_local_scheduler_parsing():
    from napari_cryoseg.core.errors import InputError

    with pytest.raises(InputError, match="local:N"):
        dist.make_client("local:two")
    # numpy input without a client runs on the default dask scheduler
    small = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    assert dist.segment_distributed(small, _tiny(), block=256, device="cpu").shape == (64, 64)


def _tiny():
    from napari_cryoseg.model.checkpoint import ModelFile
    from napari_cryoseg.model.config import preset

    return ModelFile.new(preset("tiny", base_channels=4), seed=0)


def test_cli_dashboard_link_is_printed(tmp_path, capsys):
    """``--dashboard`` starts the local cluster's dashboard (loopback) and prints its link;
    a TIFF input travels to the worker process (its lazy reader pickles without a file
    handle) and comes back as OME-Zarr labels."""
    import tifffile

    from napari_cryoseg.cli import main
    from napari_cryoseg.model.checkpoint import save_model

    model = save_model(_tiny(), tmp_path / "m.pt")
    image = tmp_path / "img.tif"
    pixels = np.random.default_rng(0).integers(0, 255, (64, 72), np.uint8)
    tifffile.imwrite(image, pixels)
    code = main(["segment", str(image), "--model", str(model), "--out",
                 str(tmp_path / "o"), "--device", "cpu", "--scheduler", "local:1",
                 "--dashboard", "127.0.0.1:0", "--output-format", "zarr"])
    err = capsys.readouterr().err
    assert code == 0, err
    line = next(x for x in err.splitlines() if x.startswith("dask dashboard: "))
    assert line.startswith("dask dashboard: http://127.0.0.1:") and line.endswith("/status")
    from napari_cryoseg.io.zarr_labels import read_labels_zarr

    reference = drain(segment(pixels, _tiny(), device="cpu")).labels
    stored = read_labels_zarr(tmp_path / "o" / "img_labels.zarr")
    assert (np.asarray(stored.data) == reference).mean() >= 0.999

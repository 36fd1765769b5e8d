"""``cryoseg segment`` with zarr inputs and zarr outputs."""

from __future__ import annotations

import dask.array as da
import numpy as np
import zarr

from napari_cryoseg.cli import main
from napari_cryoseg.core.synthetic import SampleConfig, make_sample
from napari_cryoseg.engine.events import drain
from napari_cryoseg.engine.inference.predict import segment
from napari_cryoseg.io import read_image
from napari_cryoseg.io.zarr_io import write_zarr_image
from napari_cryoseg.model.checkpoint import ModelFile, save_model
from napari_cryoseg.model.config import preset


def test_segment_zarr_lazily_into_zarr(tmp_path):
    model = ModelFile.new(preset("tiny", base_channels=4), seed=0)
    model_path = save_model(model, tmp_path / "tiny.pt")
    image, _ = make_sample(1, SampleConfig(shape=(1100, 1300)))
    src = write_zarr_image(tmp_path / "big.zarr", image, chunks=(512, 512), pixel_size_nm=4.0)
    lazy = read_image(src, lazy=True)
    assert isinstance(lazy.data, da.Array)
    code = main(["segment", str(src), "--model", str(model_path), "--out", str(tmp_path / "o"),
                 "--device", "cpu"])
    assert code == 0
    out = tmp_path / "o" / "big_labels.zarr"
    reference = drain(segment(image, model, device="cpu")).labels
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["ome"]["labels"] == ["big"]  # an NGFF labels group
    stored = group["big"]["s0"]
    assert stored.chunks[0] == 512  # aligned to tile rows
    np.testing.assert_array_equal(stored[...], reference)
    np.testing.assert_array_equal(da.from_zarr(str(out), component="big/s0").compute(),
                                  reference)
    assert group["big"]["s1"].shape == (550, 650)  # a pyramid level
    assert read_image(out).pixel_size_nm == 4.0

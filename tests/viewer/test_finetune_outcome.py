"""What the Fine-tune section says about a result, without Qt."""

from __future__ import annotations

from napari_cryoseg.engine.training.change_check import ChangeReport
from napari_cryoseg.engine.training.finetune_settings import FinetuneResult
from napari_cryoseg.model.checkpoint import ModelFile
from napari_cryoseg.model.config import preset
from napari_cryoseg.viewer.finetune_outcome import describe_outcome


def _result(report: ChangeReport, improved: bool = True) -> FinetuneResult:
    return FinetuneResult(ModelFile.new(preset("tiny"), seed=0), {"dice": 0.52},
                          {"dice": 0.67}, improved, 20, 3.0, 500, 20, "", [], [],
                          change_report=report)


def test_a_flagged_result_keeps_its_status_short_and_its_reasons_under_the_curve():
    reasons = ["cell +28% elsewhere, the corrections -6%",
               "grid bar -35% elsewhere, more than the corrections' -9%",
               "grid bar: 28% of the pixels the old model was sure of are labelled "
               "otherwise, the corrections changed 7% of them"]
    report = ChangeReport(n_images=3, pixels=400_000, changed_share=0.083,
                          area_change={"cell": 0.28, "grid bar": -0.35},
                          verdict="ask", reasons=reasons)
    outcome = describe_outcome(_result(report))
    assert outcome.swap and outcome.ask
    assert outcome.status.startswith("not applied: better on the held-out corrections")
    assert "(cell +28%, grid bar -35%)" in outcome.status
    assert "Apply" in outcome.status and "Discard" in outcome.status
    assert len(outcome.status) < 300 and not any(r in outcome.status for r in reasons)
    assert all(r in outcome.metrics for r in reasons)  # the whole report, below
    assert "before 0.520 → after 0.670 (+0.150)" in outcome.metrics


def test_an_unflagged_result_is_swapped_in_and_no_gain_keeps_the_model():
    quiet = ChangeReport(n_images=2, pixels=1000, changed_share=0.01,
                         area_change={"cell": -0.02})
    assert describe_outcome(_result(quiet)).swap
    assert not describe_outcome(_result(quiet)).ask
    kept = describe_outcome(_result(quiet, improved=False))
    assert not kept.swap and kept.metrics.endswith("model not changed")

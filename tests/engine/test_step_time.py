"""Step time measured on this machine, cached, and turned into what a budget buys."""

from __future__ import annotations

import json

import pytest

from napari_cryoseg.engine.training import step_time as st
from napari_cryoseg.engine.training.overheads import (
    OVERHEAD_SHARE,
    adapt_time_limit,
    affordable_blends,
)
from napari_cryoseg.model.config import preset

TINY = preset("tiny", n_classes=3)


def test_measured_once_then_cached_in_memory_and_on_disk():
    key = st.step_key(TINY, patch=48, batch=2, device="cpu")
    assert st.cached_step_time(key) is None
    seconds = st.measure_step_time(TINY, patch=48, batch=2, device="cpu")
    assert seconds > 0
    # the key holds what the time depends on; patch rounded up to the network stride
    assert key.arch == "tiny" and key.patch == 48 and key.batch == 2
    assert key.threads >= 1 and key.device == "cpu"
    assert st.measure_step_time(TINY, patch=48, batch=2, device="cpu") == seconds
    assert st.first_step_extra(key) > 0  # the warm-up step's set-up, paid once per run
    on_disk = json.loads(st.cache_path().read_text())
    assert on_disk[key.text()] == pytest.approx(seconds, rel=1e-3)
    st.forget_step_times()  # a new session reads the file
    assert st.cached_step_time(key) == pytest.approx(seconds, rel=1e-3)
    # another patch or batch is another measurement
    assert st.cached_step_time(st.step_key(TINY, patch=64, batch=2, device="cpu")) is None
    assert st.cached_step_time(st.step_key(TINY, patch=48, batch=4, device="cpu")) is None


def test_a_broken_cache_file_means_measure_again():
    path = st.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    key = st.step_key(TINY, patch=32, batch=1, device="cpu")
    assert st.cached_step_time(key) is None
    st.record_step_time(key, 0.25)
    assert json.loads(path.read_text()) == {key.text(): 0.25}


def test_what_a_budget_buys_and_the_budget_that_is_enough():
    # 6 steps in 60 s was what the old default made on a 2-core CPU
    e = st.estimate(7.0, 60.0, kind="train")
    assert e.steps == st.steps_in(60.0, 7.0) < st.min_useful_steps("train")
    assert not e.enough
    assert e.text().startswith(f"60 s ≈ {e.steps} steps here (7.0 s a step)")
    assert f"set Time budget to {e.proposed_s:.0f} s" in e.text()
    assert "--" not in e.text()  # dock words, not command-line flags
    proposed = st.estimate(7.0, e.proposed_s, kind="train")
    assert proposed.enough and proposed.steps >= st.min_useful_steps("train")
    assert e.proposed_s % st.ROUND_TO_S == 0
    # a step limit ends first
    assert st.estimate(0.01, 600.0, max_steps=200).steps == 200
    # no limit at all
    assert st.estimate(1.0, None).text().startswith("no time limit")
    # a pretrained start needs fewer steps: the one hook for it
    assert st.min_useful_steps("train", pretrained=True) < st.min_useful_steps("train")
    assert st.estimate(7.0, 60, pretrained=True).min_steps == \
        st.MIN_USEFUL_STEPS["train_pretrained"]
    assert st.estimate(7.0, 60, kind="finetune").min_steps == st.MIN_USEFUL_STEPS["finetune"]


def test_finetune_overheads_fit_their_share_of_the_budget():
    # scoring the held-out part once cost 6 s: adaptation gets what is left of 25 %
    limit = adapt_time_limit(60.0, spent_s=6.0, score_s=6.0)
    assert limit == pytest.approx(OVERHEAD_SHARE * 60 - 12)
    assert adapt_time_limit(60.0, spent_s=10.0, score_s=6.0) == 0.0  # skip it
    assert adapt_time_limit(None, 10.0, 6.0) is None
    # blends: each costs a scoring; the ones nearest the parent are kept first
    assert affordable_blends((0.25, 0.5, 1.0), 60.0, spent_s=11.0, score_s=2.0) == \
        (0.25, 0.5, 1.0)
    assert affordable_blends((0.25, 0.5, 1.0), 60.0, spent_s=12.0, score_s=2.5) == (0.25, 1.0)
    assert affordable_blends((0.25, 0.5, 1.0), 60.0, spent_s=15.0, score_s=2.0) == (1.0,)
    assert affordable_blends((0.25, 0.5, 1.0), None, 100.0, 50.0) == (0.25, 0.5, 1.0)

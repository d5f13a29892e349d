"""The progress meter: rate and ETA lines without a terminal, a bar with one."""

from __future__ import annotations

import logging

from tfrs_model.meter import Meter, duration


def test_without_a_bar_it_logs_done_total_rate_and_eta(caplog):
    with (
        caplog.at_level(logging.INFO, logger="tfrs_model.meter"),
        Meter(1000, "users", "ranking two_tower", bar=False, log_every_s=0.0) as meter,
    ):
        meter.update_to(250)
        meter.update_to(1000)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("ranking two_tower: 250/1,000 users, ")
    assert "users/s, ETA " in lines[0]
    assert lines[1].endswith("ETA 0m00s")


def test_lines_are_spaced_by_log_every_s(caplog):
    with (
        caplog.at_level(logging.INFO, logger="tfrs_model.meter"),
        Meter(10, "rows", "writing", bar=False, log_every_s=3600.0) as meter,
    ):
        for done in range(1, 11):
            meter.update_to(done)
    assert caplog.records == []


def test_with_a_bar_nothing_is_logged(caplog):
    with (
        caplog.at_level(logging.INFO, logger="tfrs_model.meter"),
        Meter(10, "rows", "writing", bar=True, log_every_s=0.0) as meter,
    ):
        meter.update_to(10, loss="0.5")
    assert caplog.records == []
    assert meter.done == 10


def test_durations_read_as_hours_minutes_seconds():
    assert duration(59.9) == "0m59s"
    assert duration(3723) == "1h02m03s"
    assert duration(float("inf")) == "unknown"

"""Chaos: a 200-row run whose driver is SIGKILLed at 5 seeded random moments and restarted each time.

At the end every row is done exactly once, the ledger has no duplicate or contradicting done records, and
the output listing has no partial (temporary) or orphan image or curve file (pipeline_checks.check_output).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.chaos_driver_kill import chaos_driver_kill

pytestmark = pytest.mark.chaos


def test_driver_killed_five_times_then_every_row_done_exactly_once(tmp_path: Path) -> None:
    figures = chaos_driver_kill(tmp_path, rows=200, kills=5, seed=0)
    assert figures["done"] == 200
    assert figures["kills_while_running"] == 5, figures["kills"]  # every kill hit a live driver
    assert figures["runs_recorded"] >= 1
    # The final run only finished what the killed ones left: nothing done before was recomputed.
    assert figures["final_run_already_done"] + figures["final_run_done"] == 200
    assert figures["final_run_already_done"] > 0

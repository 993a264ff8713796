"""The hardware families live in one table (codesign.families); the tables kept elsewhere name only its families."""

from __future__ import annotations

from codesign.board import board_names, load_board
from codesign.core.timing import MODELS
from codesign.families import FAMILIES


def test_the_delay_models_name_only_families():
    assert set(MODELS) <= set(FAMILIES)


def test_every_board_names_a_family_with_a_synthesis_command():
    assert all(FAMILIES[load_board(name).synth_family].synth for name in board_names())

"""Tests of the campaign engine, segments, templates, schedules, consent links, triggers."""

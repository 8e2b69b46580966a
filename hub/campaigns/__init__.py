"""Campaigns: segments, templates, schedules, the sending engine, consent links, triggers, reports."""

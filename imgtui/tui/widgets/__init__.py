"""Widgets of the imgtui app, one per file."""

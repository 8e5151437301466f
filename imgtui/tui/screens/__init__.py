"""Screens of the imgtui app."""

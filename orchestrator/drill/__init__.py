"""Drills: the exit path run into scratch targets, timed, cleaned up and reported."""

"""Helpers shared by the test modules (tests/conftest.py holds the shared fixtures)."""

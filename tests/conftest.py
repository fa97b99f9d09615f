"""The whole suite's fixtures live in tests/_support/fixtures.py; its helpers in tests/_support."""

pytest_plugins = ["tests._support.fixtures"]

"""Loads the Euglena pytest plugin for every test in the repository."""

pytest_plugins = ["harness.pytest_plugin"]

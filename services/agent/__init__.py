"""The agent: consumes mandates from the work queue, runs them and records results."""

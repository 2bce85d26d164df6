"""The autoscaler Lambda: scales the agent service on the work queue's depth."""

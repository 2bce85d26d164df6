"""Publishes the work queue's depth to CloudWatch: ``python -m services.metrics``."""

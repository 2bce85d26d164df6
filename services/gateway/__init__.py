"""The gateway: the HTTP API through which users submit and follow tasks."""

"""Stage 0: deploy from scratch and update."""

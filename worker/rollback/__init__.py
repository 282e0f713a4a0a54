"""Rollback: a job of its own that deletes, through Delete Device, what an import created."""

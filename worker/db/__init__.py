"""The database: the source of truth for jobs, chunks and every device's outcome."""

"""The import throughput benchmark (``python -m bench.import_throughput``), one module a job."""

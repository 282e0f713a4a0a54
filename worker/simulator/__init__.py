"""A local, faithful stand-in for the EnOS Connection Service API (ASGI, served by uvicorn)."""

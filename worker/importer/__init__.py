"""The import itself: file → items → chunks → EnOS → outcomes, as plain functions over a session.

Celery tasks (``worker.tasks``) and the embedded runner call these; tests call them directly.
"""

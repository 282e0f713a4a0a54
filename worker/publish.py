"""Publishing "send chunk N" messages: all a process that only starts jobs (the CLI) needs of
Celery, without the tasks and what they import."""

from __future__ import annotations

from worker.celery_app import QUEUE, app
from worker.logs import get_logger

log = get_logger(__name__)


def publish_chunks(ids: list[int]) -> None:
    """Publishes "send chunk N" messages; a publish that fails is repaired by the sweeper."""
    for chunk_id in ids:
        try:
            app.send_task("enos_import.send_chunk", args=[chunk_id], queue=QUEUE)
        except Exception as exc:
            log.warning("chunk.publish_failed", chunk_id=chunk_id, error=str(exc))

"""The two contract views for status readers (psql, BI tools, dashboards).

Their names and columns are a contract: a migration may change how they are computed, never what
they show (the SQL itself lives in the migrations).
"""

from __future__ import annotations

JOB_STATUS_COLUMNS = (
    "job_id", "status", "org_id", "source", "total", "pending", "created", "adopted", "invalid",
    "failed", "conflict", "review", "cancelled", "created_at", "started_at", "finished_at",
    "last_error",
)  # fmt: skip

DEVICE_OUTCOME_COLUMNS = (
    "job_id", "line_no", "product_key", "device_key", "asset_id", "status", "error_code",
    "error_message", "attempts", "updated_at",
)  # fmt: skip

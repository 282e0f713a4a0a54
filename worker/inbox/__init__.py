"""Nightly imports: files dropped into ``ENOS_IMPORT_INBOX_DIR/<org_id>/`` become jobs.

``folders`` knows the layout on disk (what may be taken, where results go, moving without ever
overwriting), ``scan`` decides what to take and claims it in the database, ``filing`` puts a
file and its results away when its job ends, and ``tasks`` are the Celery tasks around them.
"""

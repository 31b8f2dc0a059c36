"""The daemon's queries: the named, described blocks of ``queries.sql``, loaded once.

Only :mod:`maintd.scheduler.store.run_store` uses them. The file format and its
parser are in :mod:`maintd.jobs.sql_blocks`, shared with the built-in jobs' queries.
"""

from maintd.jobs.sql_blocks import load_sql_blocks

QUERIES = load_sql_blocks(__package__)

"""The daemon's queries: the named, described blocks of ``queries.sql``, loaded once.

Only :mod:`maintd.scheduler.store.run_store` uses them.
"""

from maintd.jobs.queries import load_package_queries

QUERIES = load_package_queries(__package__)

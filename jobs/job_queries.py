"""The jobs' own queries (``jobs/queries.sql``), loaded once for every task that uses them."""

from maintd.jobs.queries import load_package_queries

JOB_QUERIES = load_package_queries("maintd.jobs")

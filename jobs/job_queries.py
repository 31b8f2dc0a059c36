"""The jobs' own queries (``jobs/queries.sql``), loaded once for every task that uses them."""

from jobs.queries import load_package_queries

JOB_QUERIES = load_package_queries("jobs")

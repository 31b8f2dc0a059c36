"""The built-in jobs' queries: the named, described blocks of ``queries.sql``, loaded once."""

from maintd.jobs.sql_blocks import load_sql_blocks

JOB_QUERIES = load_sql_blocks(__package__)

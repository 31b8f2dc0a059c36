"""Everything the daemon keeps in PostgreSQL, and how it gets there.

``run_store`` is the one module that talks to the ``maintd`` schema (one typed
function per named query of ``sql/queries.sql``); ``migrate`` applies the
versioned ``migrations/``; ``database`` opens the database at start (an
embedded server from ``embedded``, or a DSN) with its pool.
"""

"""The ``maintd`` command line.

``main`` builds the parser (standard library only) and runs the daemon's own
commands (``run``, ``check-config``, ``migrate``, ``preview``, ``token``), each
importing what it needs when it runs. ``client`` declares the admin commands,
clients of a running daemon's API and nothing more: ``target`` finds the daemon
and the token, ``api_client`` calls its API, and ``listing`` (``jobs``,
``runs``), ``trigger``, ``logs`` and ``actions`` (``cancel``, ``pause``,
``resume``) are their handlers. ``run_job`` runs one job in this process;
``live`` follows a run to its end and ``render`` draws tables and times for
people.
"""

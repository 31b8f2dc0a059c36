"""The ``maintd`` command line.

``main`` parses the command line and runs the daemon's own commands (``run``,
``check-config``, ``migrate``, ``preview``, ``token``); ``client`` is the admin
client (``jobs``, ``runs``, ``trigger``, ``logs``, ``cancel``, ``pause``,
``resume``) that talks to a running daemon's API; ``run_job`` runs one job in
this process; ``live`` follows a run to its end and ``render`` draws tables and
times for people.
"""

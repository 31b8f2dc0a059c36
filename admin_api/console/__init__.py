"""The web console at ``/ui/``: every job, every fire, every run, for admins in a browser.

Served by the daemon itself (same process and port), rendered on the server with
Jinja2 (``templates/``), every asset shipped in the package (``static/``): nothing
is loaded from elsewhere, so it works offline and needs no build step.

Live parts (the overview refreshing itself, a run's progress and log tail, filters
applied as one types) use htmx, vendored as ``static/htmx.min.js`` (2.0.11, 0BSD,
from npm's ``htmx.org``): the server keeps rendering HTML, and each live part is one
attribute on the element it refreshes (``hx-get``/``hx-trigger="every 1s"``) instead
of a JSON client of our own in JavaScript. Every page also works without it (plain
links and forms). ``static/console.js`` does what only the browser knows: times in
its time zone, countdowns.

The console sees the daemon through the JSON API's engine
(:class:`~maintd.admin_api.interface.AdminEngine`: jobs, runs, trigger, pause,
cancel) and :class:`~maintd.admin_api.console.interface.ConsoleEngine` (its
sessions and views of history); it holds no SQL of its own.
"""

"""The exit statuses of every ``maintd`` command, in one place.

sysexits.h where one fits (what systemd units and shell scripts expect), and
timeout(1)'s and the shell's for a wait given up and Ctrl-C.
"""

EX_OK = 0
EX_FAILED = 1  # the run failed, timed out, was cancelled or lost; or the request was refused (404, 409, ...)
EX_USAGE = 64
EX_UNAVAILABLE = 69  # the daemon, its port or the database cannot be reached
EX_CONFIG = 78  # a config error, or a database schema newer than this maintd: not retried by systemd
EX_WAIT_TIMEOUT = 124  # as timeout(1): gave up waiting; the run goes on
EX_INTERRUPTED = 130  # 128 + SIGINT

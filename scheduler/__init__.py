"""maintd, the daemon: config, schedules, the engine around APScheduler, the run store and the CLI."""

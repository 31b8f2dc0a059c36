"""config.toml: parsed once into frozen, validated objects, and re-read on SIGHUP.

``model`` holds the config objects, their defaults and the loaders (every
problem reported with its key path); ``types`` the value types shared by the
sections (durations, time zones); ``alerts`` the ``[alerts]`` section;
``reload`` what a SIGHUP changes and what needs a restart.
"""

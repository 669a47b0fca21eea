"""The command line: `liveport` and the daemon entry points."""

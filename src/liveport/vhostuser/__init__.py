"""liveport vhost-user backend and compatibility modes."""

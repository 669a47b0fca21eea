"""liveport-agent: one per chassis; binds ports and programs br-int."""

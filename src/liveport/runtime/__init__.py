"""Operating-system plumbing shared by the I/O layers: daemons, unixctl, logging."""

"""Real QEMU (TCG) against liveport's vhost-user back-end: V4 to V7 of DESIGN.md."""

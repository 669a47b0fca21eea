"""The command line: `liveport` and the daemon entry points.

Process-wide setting for liveport's own programs (never for library users): python-ovs
probes for eventlet when it is imported, and os-ken drags eventlet in as a dependency, so
the probe would import it (~170 ms and a deprecation warning on every command). liveport's
programs never use eventlet, so the probe is made to fail fast. This package is imported
before any of its modules, hence before ovs; library users importing liveport.cms into an
eventlet application are unaffected.
"""

import sys

sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]

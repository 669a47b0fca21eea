"""Process-wide settings for liveport's own programs (never for library users).

python-ovs probes for eventlet at import; os-ken drags eventlet in as a dependency, so the
probe would import it (~170 ms and a deprecation warning on every command). liveport's
programs never use eventlet: make the probe fail fast. Library users importing
liveport.cms into an eventlet application are unaffected, since only the entry points
import this module.
"""

import sys

sys.modules.setdefault("eventlet", None)  # type: ignore[arg-type]

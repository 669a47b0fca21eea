"""The Prometheus endpoint of a daemon (`--metrics-address HOST:PORT`, off by default).

prometheus_client is imported only when the endpoint is on: it costs a daemon a sixth of a
second and some memory it has no use for otherwise. Each daemon keeps its metrics in its own
CollectorRegistry (not prometheus_client's global one), so tests can run several.

Concurrency model: one HTTP thread answers scrapes, one at a time. Collectors it runs read
immutable values (database snapshots, the agent's memory) and prometheus_client's metric
objects, which have their own locks.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from liveport.model.errors import InvalidInput, Unavailable

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("liveport.metrics")

# Latencies of the control plane: from a millisecond to ten seconds.
LATENCY_BUCKETS: Final = (
    *(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05),
    *(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
# CPU per pass or batch: from a tenth of a millisecond to a second.
CPU_BUCKETS: Final = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT or [IPV6]:PORT (PORT 0: any free port)."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise InvalidInput(f"--metrics-address takes HOST:PORT, not {text!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(part.isalnum() or "-" in part for part in host.split(".")):
            raise InvalidInput(f"--metrics-address: {host!r} is not a host") from None
    return host, int(port)


def new_registry() -> CollectorRegistry:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415 - see the docstring

    return CollectorRegistry(auto_describe=True)


def connected_family(dbs: Iterable[tuple[str, bool]]) -> Metric:
    """liveport_db_connected{db}: 1 if the connection to that database is up."""
    from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415 - see the docstring

    family = GaugeMetricFamily(
        "liveport_db_connected", "1 if the database connection is up", labels=["db"]
    )
    for name, up in dbs:
        family.add_metric([name], 1 if up else 0)
    return family


def info_family(program: str, version: str) -> Metric:
    """liveport_info{program,version}: always 1."""
    from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415 - see the docstring

    family = GaugeMetricFamily(
        "liveport_info", "The program and its version", labels=["program", "version"]
    )
    family.add_metric([program, version], 1)
    return family


class MetricsServer:
    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self._server: Any = None  # a wsgiref server, imported only when metrics are on
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """Where it listens (the real port when 0 was asked)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def start(self) -> None:
        # Imported here: a daemon without metrics does not load an HTTP server.
        from wsgiref.simple_server import WSGIRequestHandler, make_server  # noqa: PLC0415

        from prometheus_client import make_wsgi_app  # noqa: PLC0415 - see the docstring

        class _Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        family_server = _server_class(self.host)
        try:
            server = make_server(
                self.host,
                self.port,
                make_wsgi_app(self.registry),
                server_class=family_server,
                handler_class=_Quiet,
            )
        except OSError as exc:
            raise Unavailable(
                f"cannot listen for metrics on {self.address}: {exc.strerror or exc}"
            ) from None
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        log.info("metrics: listening on http://%s/metrics", self.address)

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)


def _server_class(host: str) -> type[Any]:
    import socket  # noqa: PLC0415 - only here
    from wsgiref.simple_server import WSGIServer  # noqa: PLC0415 - only with metrics on

    try:
        v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        v6 = False

    class Server(WSGIServer):
        address_family = socket.AF_INET6 if v6 else socket.AF_INET

    return Server

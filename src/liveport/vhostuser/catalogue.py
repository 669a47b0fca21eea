"""Reading the vhost-user mode catalogue: the shipped modes.json plus distribution files.

The catalogue's format, validation and ordering are pure and live in
liveport.model.catalogue; this module only finds and reads the files: the shipped
liveport/vhostuser/modes.json, then the files named in $LIVEPORT_VHOST_CATALOGUE
(colon-separated), then every *.json in /etc/liveport/vhost-modes.d (sorted by name), then
any paths the caller adds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

from liveport.model.catalogue import Catalogue, decode, parse_catalogue
from liveport.model.errors import InvalidInput

CATALOGUE_ENV = "LIVEPORT_VHOST_CATALOGUE"  # colon-separated paths of distribution files
CATALOGUE_DIR = Path("/etc/liveport/vhost-modes.d")  # every *.json in it, sorted by name
SHIPPED = "liveport/vhostuser/modes.json"  # how errors and Catalogue.sources name it


def shipped_text() -> str:
    """The text of the catalogue that ships with the package."""
    return resources.files("liveport").joinpath("vhostuser", "modes.json").read_text("utf-8")


def load_catalogue(
    extra_paths: Iterable[str | os.PathLike[str]] = (),
    *,
    environ: Mapping[str, str] | None = None,
    config_dir: Path | None = CATALOGUE_DIR,
) -> Catalogue:
    """The shipped catalogue plus the distribution files: those named in
    $LIVEPORT_VHOST_CATALOGUE (colon-separated), then config_dir/*.json, then extra_paths.

    A file that cannot be read or is not valid JSON is refused with InvalidInput naming it.
    """
    env = os.environ if environ is None else environ
    docs = [(SHIPPED, decode(shipped_text(), SHIPPED))]
    paths = [Path(p) for p in env.get(CATALOGUE_ENV, "").split(":") if p]
    if config_dir is not None and config_dir.is_dir():
        paths += sorted(config_dir.glob("*.json"))
    paths += [Path(p) for p in extra_paths]
    docs += [(str(path), decode(_read(path), str(path))) for path in paths]
    return parse_catalogue(docs)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        reason = err.strerror or str(err)
        raise InvalidInput(f"{path}: cannot read the vhost-user mode catalogue: {reason}") from None

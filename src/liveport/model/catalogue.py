"""The catalogue of vhost-user compatibility modes (DESIGN.md V1): named modes, newest first.

The catalogue ships as data (liveport/vhostuser/modes.json) and distributions may add
modes of their own (say `fc26.ovs-dpdk.v2.6`) in further files. Each file is a JSON list
of modes, newest first:

    {"name": "upstream.ovs-dpdk.v2.7",
     "based_on": "what this mode follows (free text)",
     "features": ["VIRTIO_NET_F_MRG_RXBUF", ...],       # virtio feature names
     "protocol_features": ["VHOST_USER_PROTOCOL_F_MQ", ...],
     "max_queue_pairs": 128, "max_ring_size": 32768,
     "extra": {"key": "value"},                         # optional, strings only
     "family": "ovs-dpdk-tso",                          # optional
     "after": "upstream.ovs-dpdk.v2.6"}                  # optional placement

A mode of a later file is placed right after the mode that `after` names (so it counts
as older than that one), at the very front with `"newest": true`, after the mode before
it in the same file when it has neither, and at the end when it is the first of its file.
Every mode must keep migration possible (VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES,
VHOST_USER_PROTOCOL_F_LOG_SHMFD); unknown bit names, duplicate names, non-positive limits
and unknown fields are refused with one line naming the file and the mode.

A *family* is a line of modes that one kind of back-end went through release by release
(the upstream OVS-DPDK modes are the default family, ""). A chassis whose back-end
implements a mode offers that mode and the older modes of its family (`supported_modes`),
not the modes of other kinds of back-end that happen to sort after it.

Everything here is pure: `parse_catalogue` and `validate` take already-parsed JSON;
liveport.vhostuser.catalogue reads the files.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from liveport.model.errors import InvalidInput, NotFound
from liveport.model.frozen import FrozenMap
from liveport.model.virtio import Mode, mask, migration_blockers, protocol_mask

DEFAULT_FAMILY = ""

_REQUIRED = ("name", "features", "protocol_features", "max_queue_pairs", "max_ring_size")
_OPTIONAL = ("based_on", "extra", "family", "after", "newest")


@dataclass(frozen=True)
class CatalogueEntry:
    """One validated mode of a catalogue file, with its note and where it goes."""

    mode: Mode
    based_on: str = ""
    after: str | None = None
    newest: bool = False
    family: str = DEFAULT_FAMILY


@dataclass(frozen=True)
class Catalogue:
    """The known modes, newest first, with the note on each, the file it came from and its
    family (absent: the default family)."""

    modes: tuple[Mode, ...]
    notes: FrozenMap[str, str] = field(default_factory=FrozenMap[str, str])
    sources: FrozenMap[str, str] = field(default_factory=FrozenMap[str, str])
    families: FrozenMap[str, str] = field(default_factory=FrozenMap[str, str])

    def __post_init__(self) -> None:
        if not self.modes:
            raise InvalidInput("the vhost-user mode catalogue defines no modes")
        seen: set[str] = set()
        for mode in self.modes:
            if mode.name in seen:
                raise InvalidInput(f"vhost-user mode {mode.name!r} is defined twice")
            seen.add(mode.name)

    def __iter__(self) -> Iterator[Mode]:
        return iter(self.modes)

    def __len__(self) -> int:
        return len(self.modes)

    def __contains__(self, name: object) -> bool:
        return any(mode.name == name for mode in self.modes)

    def names(self) -> tuple[str, ...]:
        """All mode names, newest first."""
        return tuple(mode.name for mode in self.modes)

    def get(self, name: str) -> Mode:
        """The mode called name; NotFound (listing the known names) if there is none."""
        for mode in self.modes:
            if mode.name == name:
                return mode
        raise NotFound(f"unknown vhost-user mode {name!r}; known: {', '.join(self.names())}")

    def based_on(self, name: str) -> str:
        """The note saying what the mode follows."""
        return self.notes.get(self.get(name).name, "")

    def family(self, name: str) -> str:
        """The family of the mode called name ("" for the default family)."""
        return self.families.get(self.get(name).name, DEFAULT_FAMILY)

    def newest(self) -> Mode:
        """The newest mode."""
        return self.modes[0]

    def newest_common(self, name_sets: Iterable[Collection[str]]) -> Mode | None:
        """The newest mode named in every set (each chassis' supported modes), or None.

        Names the catalogue does not know are ignored; with no sets at all every mode is
        common and the newest is returned.
        """
        sets = [frozenset(names) for names in name_sets]
        return next((m for m in self.modes if all(m.name in s for s in sets)), None)

    def select(self, requested: str | None, supported: Collection[str]) -> Mode:
        """The mode for a new port (V3): the one requested, or the newest supported one.

        An unknown or unsupported request, or nothing supported, is refused with
        InvalidInput listing what is supported here.
        """
        offered = [m for m in self.modes if m.name in supported]
        listing = ", ".join(m.name for m in offered) or "none"
        if requested is None:
            if not offered:
                raise InvalidInput(f"no vhost-user mode is supported here (supported: {listing})")
            return offered[0]
        if requested not in self:
            raise InvalidInput(f"unknown vhost-user mode {requested!r} (supported here: {listing})")
        if requested not in supported:
            raise InvalidInput(
                f"vhost-user mode {requested!r} is not supported here (supported: {listing})"
            )
        return self.get(requested)


def _fail(source: str, where: str, message: str) -> NoReturn:
    raise InvalidInput(f"{source}: {where}: {message}")


def _strings(source: str, where: str, key: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        _fail(source, where, f"{key!r} must be a list of names")
    return list(value)


def _entry(source: str, where: str, raw: Mapping[str, object]) -> CatalogueEntry:
    unknown = sorted(set(raw) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        known = ", ".join(_REQUIRED + _OPTIONAL)
        _fail(source, where, f"unknown field {unknown[0]!r} (known fields: {known})")
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        _fail(source, where, f"missing field {missing[0]!r}")
    extra = raw.get("extra", {})
    if not isinstance(extra, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
    ):
        _fail(source, where, "'extra' must be an object of strings")
    based_on = raw.get("based_on", "")
    after = raw.get("after")
    newest = raw.get("newest", False)
    family = raw.get("family", DEFAULT_FAMILY)
    if not isinstance(based_on, str):
        _fail(source, where, "'based_on' must be a string")
    if not isinstance(family, str):
        _fail(source, where, "'family' must be a string")
    if after is not None and not isinstance(after, str):
        _fail(source, where, "'after' must be the name of a mode")
    if not isinstance(newest, bool):
        _fail(source, where, "'newest' must be true or false")
    if after is not None and newest:
        _fail(source, where, "give either 'after' or 'newest', not both")
    try:
        mode = Mode(
            name=raw["name"],  # type: ignore[arg-type]  # Mode checks it is a string
            features=mask(_strings(source, where, "features", raw["features"])),
            protocol_features=protocol_mask(
                _strings(source, where, "protocol_features", raw["protocol_features"])
            ),
            max_queue_pairs=raw["max_queue_pairs"],  # type: ignore[arg-type]
            max_ring_size=raw["max_ring_size"],  # type: ignore[arg-type]
            extra=FrozenMap(extra),
        )
    except InvalidInput as err:
        raise InvalidInput(f"{source}: {where}: {err}") from None
    blockers = migration_blockers(mode)
    if blockers:
        _fail(source, where, "cannot migrate: " + "; ".join(blockers))
    return CatalogueEntry(mode, based_on, after, newest, family)


def validate(doc: object, source: str) -> tuple[CatalogueEntry, ...]:
    """Check one parsed catalogue file and return its modes; InvalidInput on the first fault.

    source names the file in error messages.
    """
    if not isinstance(doc, list):
        raise InvalidInput(f"{source}: a vhost-user mode catalogue is a JSON list of modes")
    entries: list[CatalogueEntry] = []
    for index, raw in enumerate(doc, start=1):
        if not isinstance(raw, dict):
            _fail(source, f"entry {index}", "a mode is a JSON object")
        name = raw.get("name")
        where = f"mode {name!r}" if isinstance(name, str) and name else f"entry {index}"
        entry = _entry(source, where, raw)
        if any(e.mode.name == entry.mode.name for e in entries):
            _fail(source, where, "defined twice")
        entries.append(entry)
    return tuple(entries)


def parse_catalogue(docs: Iterable[tuple[str, object]]) -> Catalogue:
    """The catalogue made of parsed files, given as (source, JSON) pairs, shipped file first."""
    order: list[Mode] = []
    notes: dict[str, str] = {}
    sources: dict[str, str] = {}
    families: dict[str, str] = {}
    for source, doc in docs:
        cursor: int | None = None  # where the next mode of this file goes by default
        for entry in validate(doc, source):
            name = entry.mode.name
            where = f"mode {name!r}"
            if name in sources:
                _fail(source, where, f"defined twice (also in {sources[name]})")
            if entry.newest:
                position = 0
            elif entry.after is not None:
                names = [mode.name for mode in order]
                if entry.after not in names:
                    _fail(source, where, f"'after' names {entry.after!r}, not defined before it")
                position = names.index(entry.after) + 1
            else:
                position = len(order) if cursor is None else cursor
            order.insert(position, entry.mode)
            cursor = position + 1
            notes[name] = entry.based_on
            sources[name] = source
            if entry.family != DEFAULT_FAMILY:
                families[name] = entry.family
    if not order:
        raise InvalidInput("the vhost-user mode catalogue defines no modes")
    return Catalogue(tuple(order), FrozenMap(notes), FrozenMap(sources), FrozenMap(families))


def decode(text: str, source: str) -> object:
    """Parse one catalogue file's text; InvalidInput naming the file if it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidInput(
            f"{source}: not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})"
        ) from None


def supported_modes(
    catalogue: Catalogue, backend: str | None = None, explicit: str | None = None
) -> tuple[str, ...]:
    """The modes a chassis offers, newest first.

    `explicit` (comma-separated names) lists them; otherwise `backend` names the newest mode
    the chassis' vhost-user backend implements, which offers it and every older mode of its
    family (as a QEMU machine type does); with neither, every mode of the catalogue.
    """
    if explicit:
        wanted = [n.strip() for n in explicit.split(",") if n.strip()]
        for name in wanted:
            catalogue.get(name)  # NotFound names the unknown mode
        return tuple(n for n in catalogue.names() if n in wanted)
    names = catalogue.names()
    if backend:
        family = catalogue.family(backend)
        older = names[names.index(backend) :]
        return tuple(name for name in older if catalogue.family(name) == family)
    return names

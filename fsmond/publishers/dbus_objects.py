"""The exported D-Bus objects: Manager and FileSystem (SPEC section 5).

The Manager answers queries through the daemon's `Control`; the privileged methods
are declared here for introspection but answered by dbus_privileged's message
handler, which checks the caller's uid first. FileSystem properties are
generated from dbus_convert.FS_PROPERTIES so the list lives in one place,
and read from the latest FsState the publisher has of the file system.
Errors are translated in one place (`translate`): FsmondError subclasses
become org.fsmond.FsMon1.Error.* with their message.

No `from __future__ import annotations` here: dbus-fast reads the D-Bus
signatures from the annotations, and would read the string "None" as a
signature.
"""

import contextlib
from collections.abc import Callable, Container, Iterator
from typing import TYPE_CHECKING, Annotated, Any

from dbus_fast import PropertyAccess, Variant
from dbus_fast.annotations import DBusDict, DBusObjectPath, DBusSignature, DBusStr, DBusUInt64
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from fsmond import __version__
from fsmond.engine.step import FsState
from fsmond.errors import (
    AccessDeniedError,
    ConfigError,
    FsmondError,
    InvalidArgsError,
    NotFoundError,
)
from fsmond.events import DevNum, fs_object_path
from fsmond.publishers import dbus_docs
from fsmond.publishers.dbus_convert import (
    CONST_PROPERTIES,
    FS_PROPERTIES,
    change_fields,
    fs_values,
    mount_fields,
    vardict,
    variants,
)

if TYPE_CHECKING:
    from fsmond.publishers.control import Control

BUS_NAME = "org.fsmond.FsMon1"
MANAGER_IFACE = "org.fsmond.FsMon1.Manager"
FILESYSTEM_IFACE = "org.fsmond.FsMon1.FileSystem"
EMITS = "org.freedesktop.DBus.Property.EmitsChangedSignal"

DictList = Annotated[list[dict[str, Variant]], DBusSignature("aa{sv}")]
StrList = Annotated[list[str], DBusSignature("as")]
GenMounts = Annotated[list[Any], DBusSignature("taa{sv}")]
GenChanges = Annotated[list[Any], DBusSignature("tbaa{sv}")]
EventBody = Annotated[list[Any], DBusSignature("ossa{sv}")]
FsEventBody = Annotated[list[Any], DBusSignature("ssa{sv}")]
MountsBody = Annotated[list[Any], DBusSignature("taa{sv}")]

_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (InvalidArgsError, "InvalidArgs"),
    (NotFoundError, "NotFound"),
    (AccessDeniedError, "AccessDenied"),
    (ConfigError, "ConfigError"),
)


@contextlib.contextmanager
def translate() -> Iterator[None]:
    """FsmondError -> org.fsmond.FsMon1.Error.<Name> with the same message."""
    try:
        yield
    except FsmondError as e:
        name = next((n for cls, n in _ERRORS if isinstance(e, cls)), "Failed")
        raise DBusError(f"{BUS_NAME}.Error.{name}", str(e)) from e


def _annotate(iface: Any, emits: dict[str, str],
              docs: dict[str, tuple[str, tuple[str, ...]]]) -> Any:
    for prop in iface.properties:
        prop.annotations[EMITS] = emits.get(prop.name, "true")
    return dbus_docs.document(iface, docs)


class ManagerObject(ServiceInterface):
    def __init__(self, control: "Control", watched: Container[DevNum]) -> None:
        super().__init__(MANAGER_IFACE)
        self.control = control
        self.watched = watched  # the devices of the file systems the publisher shows

    def introspect(self) -> Any:
        return _annotate(super().introspect(), {"Version": "const"}, dbus_docs.MANAGER)

    @dbus_method()
    def GetStatus(self) -> DBusDict:
        return vardict(self.control.status())

    @dbus_method()
    def ListMounts(self) -> GenMounts:
        c = self.control
        return [c.generation(), [variants(mount_fields(m, self._fs_path(m.device)))
                                 for m in c.mounts()]]

    @dbus_method()
    def GetMount(self, path: DBusStr) -> DBusDict:
        entry = self.control.mount_at(path)
        if entry is None:
            raise DBusError(f"{BUS_NAME}.Error.NotFound", f"nothing is mounted at {path!r}")
        return variants(mount_fields(entry, self._fs_path(entry.device)))

    @dbus_method()
    def GetChangesSince(self, generation: DBusUInt64) -> GenChanges:
        with translate():
            gen, complete, changes = self.control.changes_since(generation)
        return [gen, complete, [variants(change_fields(c, self._fs_path(c.entry.device)))
                                  for c in changes]]

    @dbus_method()
    def ListWatches(self) -> DictList:
        return [vardict({**w, "id": Variant("o", w["id"])}) for w in self.control.watches()]

    # Answered by dbus_privileged.PrivilegedCalls after the uid check; these
    # bodies exist for introspection and are never reached.
    @dbus_method()
    def AddWatch(self, mount_point: DBusStr, classes: StrList, lower: DBusStr,
                 upper: DBusStr) -> DBusObjectPath:
        raise DBusError(f"{BUS_NAME}.Error.AccessDenied", "not reachable")

    @dbus_method()
    def RemoveWatch(self, mount_point: DBusStr) -> None:
        raise DBusError(f"{BUS_NAME}.Error.AccessDenied", "not reachable")

    @dbus_method()
    def Reload(self) -> None:
        raise DBusError(f"{BUS_NAME}.Error.AccessDenied", "not reachable")

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> DBusStr:
        return __version__

    @dbus_property(access=PropertyAccess.READ)
    def Generation(self) -> DBusUInt64:
        return self.control.generation()

    @dbus_signal()
    def Event(self, fs: DBusObjectPath, cls: DBusStr, name: DBusStr,
              event: DBusDict) -> EventBody:
        return [fs, cls, name, event]

    @dbus_signal()
    def MountsChanged(self, generation: DBusUInt64, changes: DictList) -> MountsBody:
        return [generation, changes]

    def _fs_path(self, dev: DevNum) -> str:
        return fs_object_path(dev) if dev in self.watched else "/"


class FileSystemObject(ServiceInterface):
    """One watched file system; its properties are added below from FS_PROPERTIES."""

    def __init__(self, state: Callable[[DevNum], FsState | None], device: DevNum) -> None:
        super().__init__(FILESYSTEM_IFACE)
        self.state = state  # the latest FsState of a device the publisher has
        self.device = device

    def introspect(self) -> Any:
        return _annotate(super().introspect(), {n: "const" for n in CONST_PROPERTIES},
                         dbus_docs.FILESYSTEM)

    def values(self) -> dict[str, Any]:
        fs = self.state(self.device)
        return fs_values(fs) if fs is not None else {}

    def value(self, name: str) -> Any:
        fs = self.state(self.device)
        if fs is None:
            raise DBusError(f"{BUS_NAME}.Error.NotFound", "this file system is gone")
        return FS_PROPERTIES[name][1](fs)

    def all_variants(self) -> dict[str, Variant]:
        return {k: Variant(FS_PROPERTIES[k][0], v) for k, v in self.values().items()}

    @dbus_signal()
    def Event(self, cls: DBusStr, name: DBusStr, event: DBusDict) -> FsEventBody:
        return [cls, name, event]


def _property(name: str, sig: str) -> Any:
    def getter(self: FileSystemObject) -> Any:
        return self.value(name)

    getter.__name__ = name
    getter.__annotations__ = {"return": Annotated[Any, DBusSignature(sig)]}
    return dbus_property(access=PropertyAccess.READ, name=name)(getter)


for _name, (_sig, _get) in FS_PROPERTIES.items():
    setattr(FileSystemObject, _name, _property(_name, _sig))

__all__ = ["BUS_NAME", "FileSystemObject", "ManagerObject", "translate"]

"""The exported D-Bus objects: Manager and FileSystem (SPEC section 5).

The Manager answers queries from the engine's state; the privileged methods
are declared here for introspection but answered by DbusPublisher's message
handler, which checks the caller's uid first. FileSystem properties are
generated from dbus_convert.FS_PROPERTIES so the list lives in one place.
Errors are translated in one place (`translate`): FsmondError subclasses
become org.fsmond.FsMon1.Error.* with their message.

No `from __future__ import annotations` here: dbus-fast reads the D-Bus
signatures from the annotations, and would read the string "None" as a
signature.
"""

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

from dbus_fast import PropertyAccess, Variant
from dbus_fast.annotations import DBusDict, DBusObjectPath, DBusSignature, DBusStr, DBusUInt64
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from fsmond import __version__
from fsmond.engine.core import Engine
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
    from fsmond.daemon import Daemon

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
    def __init__(self, daemon: "Daemon") -> None:
        super().__init__(MANAGER_IFACE)
        self.daemon = daemon

    def introspect(self) -> Any:
        return _annotate(super().introspect(), {"Version": "const"}, dbus_docs.MANAGER)

    @property
    def engine(self) -> Engine:
        return self.daemon.engine

    @dbus_method()
    def GetStatus(self) -> DBusDict:
        return vardict(self.daemon.status())

    @dbus_method()
    def ListMounts(self) -> GenMounts:
        e = self.engine
        return [e.mounts.generation, [variants(mount_fields(m, self._fs_path(m.device)))
                                      for m in e.mounts.mounts.values()]]

    @dbus_method()
    def GetMount(self, path: DBusStr) -> DBusDict:
        entry = self.engine.mounts.at(path)
        if entry is None:
            raise DBusError(f"{BUS_NAME}.Error.NotFound", f"nothing is mounted at {path!r}")
        return variants(mount_fields(entry, self._fs_path(entry.device)))

    @dbus_method()
    def GetChangesSince(self, generation: DBusUInt64) -> GenChanges:
        with translate():
            gen, complete, changes = self.engine.mounts.changes_since(generation)
        return [gen, complete, [variants(change_fields(c, self._fs_path(c.entry.device)))
                                  for c in changes]]

    @dbus_method()
    def ListWatches(self) -> DictList:
        out = []
        for dev, fs in self.engine.filesystems.items():
            w = fs.watch
            out.append(vardict({
                "id": variant_path(dev), "mount_point": fs.mount_points[0] if fs.mount_points
                else "", "fstype": fs.fstype, "device": f"{dev[0]}:{dev[1]}",
                "classes": list(w.classes), "lower": str(w.lower), "upper": str(w.upper)}))
        return out

    # Answered by DbusPublisher._privileged_call after the uid check; these
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
        return self.engine.mounts.generation

    @dbus_signal()
    def Event(self, fs: DBusObjectPath, cls: DBusStr, name: DBusStr,
              event: DBusDict) -> EventBody:
        return [fs, cls, name, event]

    @dbus_signal()
    def MountsChanged(self, generation: DBusUInt64, changes: DictList) -> MountsBody:
        return [generation, changes]

    def _fs_path(self, dev: DevNum) -> str:
        return fs_object_path(dev) if dev in self.engine.filesystems else "/"


def variant_path(dev: DevNum) -> Variant:
    return Variant("o", fs_object_path(dev))


class FileSystemObject(ServiceInterface):
    """One watched file system; its properties are added below from FS_PROPERTIES."""

    def __init__(self, engine: Engine, device: DevNum) -> None:
        super().__init__(FILESYSTEM_IFACE)
        self.engine = engine
        self.device = device

    def introspect(self) -> Any:
        return _annotate(super().introspect(), {n: "const" for n in CONST_PROPERTIES},
                         dbus_docs.FILESYSTEM)

    def values(self) -> dict[str, Any]:
        fs = self.engine.filesystems.get(self.device)
        return fs_values(fs) if fs is not None else {}

    def value(self, name: str) -> Any:
        fs = self.engine.filesystems.get(self.device)
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

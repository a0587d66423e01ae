"""org.freedesktop.Notifications as the specification (1.2) describes it, for
tests/notify/servers.py's SpecServer.

No `from __future__ import annotations`: dbus-fast reads the signatures
from the annotations.
"""

from typing import Annotated, Any

from dbus_fast.annotations import DBusDict, DBusInt32, DBusSignature, DBusStr, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method, dbus_signal

StrList = Annotated[list[str], DBusSignature("as")]
Info = Annotated[list[str], DBusSignature("ssss")]
Closed = Annotated[list[int], DBusSignature("uu")]
Invoked = Annotated[list[Any], DBusSignature("us")]


class Notifications(ServiceInterface):
    def __init__(self, capabilities: list[str]) -> None:
        super().__init__("org.freedesktop.Notifications")
        self.capabilities = capabilities
        self.shown: dict[int, list[Any]] = {}
        self.last_id = 0
        # An action "clicked" so fast that its signal leaves before Notify's reply.
        self.click_at_once = ""

    @dbus_method()
    def GetCapabilities(self) -> StrList:
        return self.capabilities

    @dbus_method()
    def Notify(self, app_name: DBusStr, replaces_id: DBusUInt32, app_icon: DBusStr,
               summary: DBusStr, body: DBusStr, actions: StrList, hints: DBusDict,
               expire_timeout: DBusInt32) -> DBusUInt32:
        if replaces_id in self.shown:
            nid = replaces_id
        else:
            self.last_id += 1
            nid = self.last_id
        self.shown[nid] = [summary, body, actions]
        if self.click_at_once:
            self.ActionInvoked(nid, self.click_at_once)
        return nid

    @dbus_method()
    def CloseNotification(self, nid: DBusUInt32) -> None:
        if self.shown.pop(nid, None) is not None:
            self.NotificationClosed(nid, 3)

    @dbus_method()
    def GetServerInformation(self) -> Info:
        return ["fsmond-tests", "fsmond", "1", "1.2"]

    @dbus_signal()
    def NotificationClosed(self, nid: DBusUInt32, reason: DBusUInt32) -> Closed:
        return [nid, reason]

    @dbus_signal()
    def ActionInvoked(self, nid: DBusUInt32, key: DBusStr) -> Invoked:
        return [nid, key]


class FileManager1(ServiceInterface):
    """org.freedesktop.FileManager1's ShowFolders, recorded."""

    def __init__(self, shown: Any) -> None:
        super().__init__("org.freedesktop.FileManager1")
        self.shown = shown  # a queue.Queue of the uris asked for

    @dbus_method()
    def ShowFolders(self, uris: StrList, startup_id: DBusStr) -> None:
        self.shown.put(list(uris))

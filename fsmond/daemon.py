"""Wiring: sources -> engine -> publishers in one asyncio task group.

Every source and publisher is a component with `async def run(started)`.
They all start in one TaskGroup; `ready` is called only when each has said
it started (READY for systemd). Observations reach the engine through
`emit`, on the loop's thread, and the step it returns (fsmond.engine.step)
goes to each publisher, which keeps its events in its own bounded outbox;
publishers ask what steps do not say through a `Control` (DaemonControl),
never through the daemon itself. Shutdown is an awaitable (`shutdown_trigger`,
SIGTERM/SIGINT by default) so tests can stop the daemon cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from fsmond import __version__
from fsmond.config import DEFAULT_CONFIG_PATH, Config, load_config, resolve_watch_args
from fsmond.engine.core import Engine
from fsmond.engine.filesystems import MERGE_WAIT
from fsmond.engine.mounts import MountChange
from fsmond.engine.step import Step
from fsmond.errors import ConfigError, FsmondError, InvalidArgsError
from fsmond.events import (
    DeviceChange,
    DevNum,
    ErrorHistory,
    KernelReport,
    Members,
    MountEntry,
    Observation,
    fs_object_path,
)
from fsmond.sdnotify import Notifier
from fsmond.sources.mounttable import make_mount_source
from fsmond.sources.space import SpaceSampler
from fsmond.sources.udev import UdevSource
from fsmond.trace import Tracer

if TYPE_CHECKING:
    from fsmond.sources.mountapi import Check

log = logging.getLogger(__name__)


class Component(Protocol):
    name: str

    async def run(self, started: Callable[[], None]) -> None: ...


class Publisher(Component, Protocol):
    def publish(self, step: Step) -> None:
        """The engine's step of one input (a storm's batch is one call)."""


@runtime_checkable
class Announcer(Protocol):
    async def announce(self) -> None:
        """Say we are here (a bus name), once every component has started:
        whoever the announcement wakes (a D-Bus-activated call) must find the
        whole mount table, not the empty one before the sources ran."""


def wait_for_signals(*signums: int) -> Awaitable[None]:
    """The handlers are in place when this returns, not when it is first
    awaited: a stop right after "ready" must find them (it used to kill us)."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for s in signums:
        loop.add_signal_handler(s, done.set)

    async def wait() -> None:
        try:
            await done.wait()
        finally:
            for s in signums:
                loop.remove_signal_handler(s)

    return wait()


RECANCEL = 3.0  # seconds; more than the MQTT publisher's 2 s to say offline
# Young objects between collections of the cyclic GC (Python's default: 700).
# fsmond's garbage is short-lived and acyclic (events, entries, batches): at
# 700 a storm runs the young collection hundreds of times for objects freed
# a moment later (BENCHMARKS.md has what 10,000 saves).
GC_YOUNG = 10_000


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel, and cancel again whatever still runs: on 3.11 a cancel that
    comes together with a wake-up is lost inside asyncio.wait_for, which
    libraries use (aiomqtt around every publish), and the component goes on."""
    pending = set(tasks)
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL)
        if pending:
            log.warning("still stopping: %s", ", ".join(t.get_name() for t in pending))


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: str | None = None,
        *,
        publishers: list[Publisher] | None = None,
        shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
        ready: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.engine = Engine(config, log_size=config.daemon.changelog_size,
                             merge_wait=MERGE_WAIT if config.daemon.kmsg else 0.0)
        self.publishers: list[Publisher] = list(publishers or [])
        self.control = DaemonControl(self)
        self._shutdown_trigger = shutdown_trigger or (
            lambda: wait_for_signals(signal.SIGTERM, signal.SIGINT))
        self._ready = ready
        self.started_at = time.monotonic()
        self.notifier = Notifier()
        self.tracer: Tracer | None = None  # --trace: every observation, for replay
        self.events = 0
        self.backends: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._batch: Step | None = None  # see emit_fs_errors
        self._tick: asyncio.TimerHandle | None = None
        self._check = _fs_check(config.daemon.mount_namespace)
        self.sampler = SpaceSampler(
            self.emit, self.engine.sample_targets, self._poll_delay,
            timeout=config.daemon.statvfs_timeout, check=self._check,
            fstype_of=self._fstype_of,
        )
        self.fserror: Any = None
        self.kmsg: Any = None
        self.enospc: Any = None  # the ENOSPC trace, armed while a file system is at risk
        self._fsids: dict[DevNum, str] = {}  # btrfs file system -> its UUID (sysfs name)
        # File systems at risk (FsState.at_risk), from the steps: the trace is
        # armed while there is one.
        self._at_risk: set[DevNum] = set()
        self._strangers: set[DevNum] = set()  # devices of no file system, as of the last look
        self.mount_source = make_mount_source(
            config.daemon.mount_backend, self.emit, config.daemon.mount_namespace)

    # ----------------------------------------------------------- the data flow

    def emit(self, obs: Observation) -> None:
        """Hand an observation to the engine (from any thread)."""
        loop = self._loop
        if loop is not None and threading.get_ident() != self._thread:
            loop.call_soon_threadsafe(self.emit, obs)
            return
        if isinstance(obs, KernelReport | DeviceChange) and obs.device is not None:
            self._look_for_members(obs.device)
        now = self._now()
        if self.tracer is not None:
            self.tracer.write(obs, now + self.engine.wall_offset)  # replayed on wall time
        step = self.engine.process(obs, now)
        if self._batch is not None:
            self._batch = self._batch.then(step)
        else:
            self._deliver(step)

    def emit_fs_errors(self, reports: list[Observation]) -> None:
        """fanotify's error reports (one read), with kmsg's text of the same errors.

        printk stores a record before ext4 notifies fanotify, so kmsg already
        holds the text (KmsgSource.read_now); the engine merges both views of
        an error into one event, and all of it is delivered at once: on this
        path every step counts, as it runs cold after seconds of quiet.
        """
        self._batch = Step()
        try:
            for r in reports:
                self.emit(r)
            if self.kmsg is not None:
                self.kmsg.read_now()
            step = self._batch
        finally:
            self._batch = None
        self._deliver(step)

    def _now(self) -> float:
        """The engine's clock, monotonic (see Engine.wall_offset), with the wall
        clock's lead brought up to date for the events' time."""
        now = time.monotonic()
        self.engine.wall_offset = time.time() - now
        return now

    def _deliver(self, step: Step) -> None:
        if step:
            self.events += len(step.events)
            for p in self.publishers:
                p.publish(step)
        if step.refreshes():
            self._follow(step)
        self._schedule_tick()

    def _follow(self, step: Step) -> None:
        """The sources that act on the set of watched file systems follow the
        step, as publishers do. The error watches come last: an ext4 error
        history they find is an input of its own, delivered in its own step."""
        for dev in step.removed:
            self._fsids.pop(dev, None)
            self._at_risk.discard(dev)
            if self.fserror is not None:
                self.fserror.unwatch(dev)
        for s in step.states:
            if s.at_risk:
                self._at_risk.add(s.device)
            else:
                self._at_risk.discard(s.device)
        if self.enospc is not None:
            self.enospc.set_at_risk(bool(self._at_risk))
        if step.added or step.removed:
            self.sampler.poke()
        for dev in step.added:
            self._start_error_watch(dev)

    def _look_for_members(self, device: DevNum) -> None:
        """A report names a device no file system owns: a device added to a
        btrfs since its members were read? sysfs says (cheap, never hangs);
        once per device until the file systems change."""
        if device in self._strangers or self.engine.owner_of(device) is not None:
            return
        from fsmond.sources.members import btrfs_members

        for dev, fsid in self._fsids.items():
            members = btrfs_members(fsid)
            if device in members:
                self.emit(Members(dev, members))
                return
        self._strangers.add(device)

    def _read_members(self, dev: DevNum, path: str) -> None:
        """In a worker thread: a btrfs' UUID (an ioctl on its mount point) and members."""
        from fsmond.sources.members import btrfs_fsid, btrfs_members

        try:
            fsid = btrfs_fsid(path)
        except OSError as e:
            # Its kernel messages name member devices: they will reach no object.
            log.warning("cannot tell the devices of the btrfs at %s: %s", path, e)
            return
        members = btrfs_members(fsid)
        if self._loop is None:
            return

        def done() -> None:
            if dev in self.engine.filesystems:
                self._fsids[dev] = fsid
                self._strangers.clear()
                self.emit(Members(dev, members))

        self._loop.call_soon_threadsafe(done)

    def _start_error_watch(self, dev: DevNum) -> None:
        fs = self.engine.filesystems.get(dev)
        if fs is None or not fs.mount_points:
            return
        top = self.engine.visible_mount(dev)
        if fs.fstype == "btrfs" and top is not None and self._loop is not None:
            self._loop.run_in_executor(None, self._read_members, dev, top.mount_point)
        if self.fserror is not None and top is not None:
            self.fserror.watch(dev, top.mount_point, top.mount_id)
        if fs.fstype in ("ext4", "ext3", "ext2"):
            history = _error_history(dev)
            if history is not None:
                self._deliver(self.engine.process(history, self._now()))

    def _schedule_tick(self) -> None:
        deadline = self.engine.next_deadline()
        if deadline is None or self._loop is None or self._tick is not None:
            return

        def tick() -> None:
            self._tick = None
            self._deliver(self.engine.tick(self._now()))

        self._tick = self._loop.call_later(max(0.0, deadline - self._now()) + 0.001, tick)

    def _fstype_of(self, dev: DevNum) -> str:
        fs = self.engine.filesystems.get(dev)
        return fs.fstype if fs is not None else ""

    def _poll_delay(self, dev: DevNum) -> float:
        d = self.config.daemon
        fs = self.engine.filesystems.get(dev)
        if fs is None:
            return d.poll_interval
        return fs.next_poll_delay(d.poll_interval, d.min_poll_interval)

    def note(self, cls: str, name: str, details: dict[str, Any]) -> None:
        """An event of the daemon itself (config errors), attached to no file system."""
        self._deliver(Step((self.engine.note(cls, name, details, self._now()),)))

    # ------------------------------------------------- what clients may ask

    def add_watch(self, mount_point: str, classes: list[str], lower: str, upper: str) -> str:
        """AddWatch: validated like a [[watch]]; returns the file system's object path."""
        _check_path(mount_point)
        try:
            spec = resolve_watch_args(classes, lower, upper, self.config.defaults)
        except ConfigError as e:  # the caller's arguments, not the daemon's file
            raise InvalidArgsError(str(e)) from None
        self._deliver(self.engine.add_watch(mount_point, spec, self._now()))
        entry = self.engine.mounts.at(mount_point)
        return fs_object_path(entry.device if entry else None)

    def remove_watch(self, mount_point: str) -> None:
        _check_path(mount_point)
        self._deliver(self.engine.remove_watch(mount_point, self._now()))

    def status(self) -> dict[str, Any]:
        """GetStatus and `fsmonctl status`: versions, backends, counts."""
        out: dict[str, Any] = {
            "version": __version__,
            "uptime": round(time.monotonic() - self.started_at, 3),
            "mount_backend": self.mount_source.name,
            "error_backends": [n for n, c in (("kmsg", self.kmsg), ("fanotify", self.fserror))
                               if c is not None and n not in self.failed],
            "device_backend": "udev" if self.config.daemon.udev and "udev" not in self.failed
            else "",
            "mounts": len(self.engine.mounts),
            "generation": self.engine.mounts.generation,
            "filesystems": len(self.engine.filesystems),
            "watches": len(self.engine.filesystems),
            "events": self.events,
            "kmsg_overruns": getattr(self.kmsg, "overruns", 0),
            "enospc_trace": self._enospc_state(),
            "enospc_failures": getattr(self.enospc, "failures", 0),
            "enospc_from_writer": getattr(self.enospc, "from_writer", 0),
            "enospc_lost": getattr(self.enospc, "lost", 0),
            "last_reload_error": self.last_reload_error,
            "unavailable": dict(self.failed),
        }
        for p in self.publishers:
            out[f"{p.name}_dropped"] = getattr(getattr(p, "outbox", None), "dropped",
                                               getattr(p, "dropped", 0))
        return out

    def _enospc_state(self) -> str:
        """armed | disarmed | off | unavailable (the reason is in `unavailable`)."""
        if "enospc-trace" in self.failed:
            return "unavailable"
        return "off" if self.enospc is None else str(self.enospc.state)

    # ---------------------------------------------------------------- reload

    def reload(self) -> None:
        """Re-read the config; on error keep the old one and say why (log, event)."""
        try:
            new = load_config(self.config_path or DEFAULT_CONFIG_PATH,
                              must_exist=self.config_path is not None)
        except (FsmondError, OSError) as e:
            log.error("reload failed, keeping the old configuration: %s", e)
            self.last_reload_error = str(e)
            self.note("err", "config", {"message": str(e)})
            self.notifier.status(f"{self.status_line()}; reload failed: {e}")
            raise
        self.last_reload_error = ""
        self.config = new
        log.info("configuration reloaded from %s", self.config_path or "defaults")
        self._deliver(self.engine.set_policy(new, self._now()))
        if self.enospc is not None:
            self.enospc.set_mode(new.daemon.enospc_trace)
        elif new.daemon.enospc_trace != "off" and "enospc-trace" not in self.failed:
            log.warning("enospc_trace = %r takes effect at the next start",
                        new.daemon.enospc_trace)
        self.sampler.poke()
        self.notifier.status(self.status_line())

    last_reload_error = ""

    # ------------------------------------------------------------- lifecycle

    def _components(self) -> list[tuple[Component, bool]]:
        """(component, required): an optional one that fails is logged and skipped."""
        d = self.config.daemon
        out: list[tuple[Component, bool]] = [(p, True) for p in self.publishers]
        out.append((self.mount_source, True))
        out.append((self.sampler, True))
        if d.kmsg:
            self.kmsg = self._optional("kmsg", "fsmond.sources.kmsg", "KmsgSource",
                                       replay=d.kmsg_replay)
        if d.fanotify_errors:
            self.fserror = self._optional("fserror", "fsmond.sources.fserror", "FsErrorSource",
                                          emit=self.emit_fs_errors, check=self._check)
        if d.enospc_trace != "off":
            self.enospc = self._optional("enospc-trace", "fsmond.sources.enospc_trace",
                                         "EnospcTraceSource", mode=d.enospc_trace)
        out += [(c, False) for c in (self.kmsg, self.fserror, self.enospc) if c is not None]
        if d.udev:
            out.append((UdevSource(self.emit), False))
        return out

    def _optional(self, name: str, module: str, cls: str, emit: Callable[..., None] | None = None,
                  **kwargs: Any) -> Any:
        try:
            factory = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as e:
            log.warning("%s not available, running without it: %s", name, e)
            self.failed[name] = str(e)
            return None
        return factory(emit or self.emit, **kwargs)

    async def _run_component(self, c: Component, required: bool, started: asyncio.Event) -> None:
        try:
            await c.run(started.set)
        except (OSError, FsmondError, ImportError) as e:
            if required or started.is_set():
                raise
            log.warning("%s not available, running without it: %s", c.name, e)
            self.failed[c.name] = str(e)
            if c is self.fserror:
                self.fserror = None
            if c is self.enospc:
                self.enospc = None
            started.set()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        loop = self._loop
        loop.add_signal_handler(signal.SIGHUP, self._reload_quietly)
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = []
                for component, required in self._components():
                    started = asyncio.Event()
                    tasks.append(tg.create_task(self._run_component(component, required, started),
                                                name=component.name))
                    # Start in order: publishers before sources, mounts before sampling.
                    done, _ = await asyncio.wait(
                        [tasks[-1], asyncio.create_task(started.wait())],
                        return_when=asyncio.FIRST_COMPLETED)
                    if tasks[-1] in done:
                        tasks[-1].result()
                    self.backends.setdefault(component.name, "started")
                for dev in list(self.engine.filesystems):
                    self._start_error_watch(dev)
                if self.enospc is not None:
                    self.enospc.set_at_risk(bool(self._at_risk))
                for p in self.publishers:
                    if isinstance(p, Announcer):
                        await p.announce()
                stop = self._shutdown_trigger()  # before anyone hears we are ready
                log.info("fsmond %s ready: %d mounts, %d file systems watched (%s)",
                         __version__, len(self.engine.mounts), len(self.engine.filesystems),
                         self.mount_source.name)
                # What start-up built (modules, the mount table) lives as long as
                # we do: leave it out of the cyclic GC, whose full collections
                # otherwise walk all of it, inside the handling of an event.
                gc.freeze()
                gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
                if self._ready is not None:
                    self._ready()
                self.notifier.ready(self.status_line())
                tasks.append(tg.create_task(self.notifier.watchdog()))
                await stop
                log.info("shutting down")
                self.notifier.stopping()
                await _cancel_all(tasks)
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            if self._tick is not None:
                self._tick.cancel()
            self.notifier.close()

    def status_line(self) -> str:
        """systemd's STATUS=: what runs and how much it watches."""
        sources = ", ".join(f"{n}" for n in self.backends if n not in self.failed)
        return (f"{len(self.engine.mounts)} mounts, {len(self.engine.filesystems)} file systems "
                f"watched; mounts via {self.mount_source.name}; running {sources}")

    def _reload_quietly(self) -> None:
        with contextlib.suppress(FsmondError, OSError):
            self.reload()


class DaemonControl:
    """The daemon as publishers see it (fsmond.publishers.control.Control):
    queries of the mount table and the watches, and the privileged methods."""

    def __init__(self, daemon: Daemon) -> None:
        self._daemon = daemon
        self._engine = daemon.engine

    def status(self) -> dict[str, Any]:
        return self._daemon.status()

    def generation(self) -> int:
        return self._engine.mounts.generation

    def mounts(self) -> Iterable[MountEntry]:
        return self._engine.mounts.mounts.values()

    def mount_at(self, path: str) -> MountEntry | None:
        return self._engine.mounts.at(path)

    def changes_since(self, generation: int) -> tuple[int, bool, list[MountChange]]:
        return self._engine.mounts.changes_since(generation)

    def mount_points(self, device: DevNum) -> list[str]:
        fs = self._engine.filesystems.get(device)
        return list(fs.mount_points) if fs is not None else []

    def watches(self) -> list[dict[str, Any]]:
        out = []
        for dev, fs in self._engine.filesystems.items():
            w = fs.watch
            out.append({
                "id": fs_object_path(dev),
                "mount_point": fs.mount_points[0] if fs.mount_points else "",
                "fstype": fs.fstype, "device": f"{dev[0]}:{dev[1]}",
                "classes": list(w.classes), "lower": str(w.lower), "upper": str(w.upper)})
        return out

    def add_watch(self, mount_point: str, classes: list[str], lower: str, upper: str) -> str:
        return self._daemon.add_watch(mount_point, classes, lower, upper)

    def remove_watch(self, mount_point: str) -> None:
        self._daemon.remove_watch(mount_point)

    def reload(self) -> None:
        self._daemon.reload()


def _check_path(mount_point: str) -> None:
    if not mount_point.startswith("/") or "\0" in mount_point or len(mount_point) > 4096:
        raise InvalidArgsError(
            f"mount point {mount_point[:100]!r} must be an absolute path of at most 4096 bytes")


def _error_history(dev: DevNum) -> ErrorHistory | None:
    try:
        from fsmond.sources.ext4_sysfs import error_history_for
    except ImportError:
        return None
    return error_history_for(dev)


def _fs_check(mount_namespace: str) -> Check | None:
    """How the sampler and the error marks tell that a path still shows the
    file system meant: by statmount's device where the kernel has statmount,
    else by statx's mount id, whose ids are only those of our own namespace."""
    try:
        from fsmond.sources import mountapi
    except ImportError:
        return None
    if mountapi.has_statmount():
        return mountapi.shows_device
    if not mount_namespace or mountapi.is_own_namespace(mount_namespace):
        return mountapi.shows_mount
    return None

"""Wiring: sources -> engine -> publishers in one asyncio task group.

Every source and publisher is a component (fsmond.lifecycle), started in
one TaskGroup; `ready` is called only when each has said it started (READY
for systemd). Observations reach the engine through `emit`, on the loop's
thread, with the time from `_now`, the engine's one clock. The step it
returns (fsmond.engine.step) goes to each publisher, which keeps its events
in its own bounded outbox, and then to the sources that act on the set of
watched file systems (the sampler, the error watches, the ENOSPC trace),
which follow steps as publishers do. Publishers ask what steps do not say
through a `Control` (fsmond.daemon_control), never through the daemon itself.
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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fsmond import __version__
from fsmond.config import DEFAULT_CONFIG_PATH, Config, load_config
from fsmond.daemon_control import DaemonControl
from fsmond.engine.core import Engine
from fsmond.engine.filesystems import MERGE_WAIT, WatchSpec
from fsmond.engine.step import FsState, Step
from fsmond.errors import FsmondError
from fsmond.events import DeviceChange, DevNum, ErrorHistory, KernelReport, Observation
from fsmond.lifecycle import Announcer, Component, Publisher, cancel_all, wait_for_signals
from fsmond.sdnotify import Notifier
from fsmond.sources.members import BtrfsMembers
from fsmond.sources.mounttable import make_mount_source
from fsmond.sources.space import SpaceSampler
from fsmond.sources.udev import UdevSource
from fsmond.trace import Tracer

if TYPE_CHECKING:
    from fsmond.sources.mountapi import Check

log = logging.getLogger(__name__)


# Young objects between collections of the cyclic GC (Python's default: 700).
# fsmond's garbage is short-lived and acyclic (events, entries, batches): at
# 700 a storm runs the young collection hundreds of times for objects freed
# a moment later (BENCHMARKS.md has what 10,000 saves).
GC_YOUNG = 10_000


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
            self.emit, interval=config.daemon.poll_interval,
            min_interval=config.daemon.min_poll_interval,
            timeout=config.daemon.statvfs_timeout, check=self._check,
        )
        self.fserror: Any = None
        self.kmsg: Any = None
        self.enospc: Any = None  # the ENOSPC trace, armed while a file system is at risk
        # The watched file systems as the steps said last: what their error
        # watches are started from, and what status counts.
        self.states: dict[DevNum, FsState] = {}  # read only
        # File systems at risk (FsState.at_risk), from the steps: the trace is
        # armed while there is one.
        self._at_risk: set[DevNum] = set()
        self.members = BtrfsMembers(self.emit, self.engine.owner_of)
        self.mount_source = make_mount_source(
            config.daemon.mount_backend, self.emit, config.daemon.mount_namespace)
        self.control = DaemonControl(self)

    # ----------------------------------------------------------- the data flow

    def emit(self, obs: Observation) -> None:
        """Hand an observation to the engine (from any thread)."""
        loop = self._loop
        if loop is not None and threading.get_ident() != self._thread:
            loop.call_soon_threadsafe(self.emit, obs)
            return
        if isinstance(obs, KernelReport | DeviceChange) and obs.device is not None:
            self.members.look_for(obs.device)
        now = self._now()
        if self.tracer is not None:
            self.tracer.write(obs, now + self.engine.stamps.wall_offset)  # replayed on wall time
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
        """The engine's clock, monotonic (engine/stamps.py), with the wall
        clock's lead brought up to date for the events' time."""
        now = time.monotonic()
        self.engine.stamps.wall_offset = time.time() - now
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
        self.sampler.follow(step)
        self.members.follow(step)
        for dev in step.removed:
            self.states.pop(dev, None)
            self._at_risk.discard(dev)
            if self.fserror is not None:
                self.fserror.unwatch(dev)
        for s in step.states:
            was = self.states.get(s.device)
            self.states[s.device] = s
            if was is not None and not was.sample_path and s.sample_path:
                self._mark_errors(s)  # uncovered: it could not be marked when added
            if s.at_risk:
                self._at_risk.add(s.device)
            else:
                self._at_risk.discard(s.device)
        if self.enospc is not None:
            self.enospc.set_at_risk(bool(self._at_risk))
        for dev in step.added:
            fs = self.states[dev]
            self._mark_errors(fs)
            if fs.fstype in ("ext4", "ext3", "ext2"):
                history = _error_history(dev)
                if history is not None:
                    self._deliver(self.engine.process(history, self._now()))

    def _mark_errors(self, fs: FsState) -> None:
        """A FAN_FS_ERROR mark (a no-op before the error source runs)."""
        if self.fserror is not None and fs.sample_path:
            self.fserror.watch(fs.device, fs.sample_path, fs.mount_id)

    def _schedule_tick(self) -> None:
        deadline = self.engine.next_deadline()
        if deadline is None or self._loop is None or self._tick is not None:
            return

        def tick() -> None:
            self._tick = None
            self._deliver(self.engine.tick(self._now()))

        self._tick = self._loop.call_later(max(0.0, deadline - self._now()) + 0.001, tick)

    def note(self, cls: str, name: str, details: dict[str, Any]) -> None:
        """An event of the daemon itself (config errors), attached to no file system."""
        self._deliver(Step((self.engine.note(cls, name, details, self._now()),)))

    # ------------------------------------------------- what clients may ask

    def add_watch(self, mount_point: str, spec: WatchSpec) -> None:
        """A run-time watch (AddWatch, checked by DaemonControl)."""
        self._deliver(self.engine.add_watch(mount_point, spec, self._now()))

    def remove_watch(self, mount_point: str) -> None:
        self._deliver(self.engine.remove_watch(mount_point, self._now()))

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
        self.sampler.interval = new.daemon.poll_interval
        self.sampler.min_interval = new.daemon.min_poll_interval
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
                for state in list(self.states.values()):
                    self._mark_errors(state)  # the error source runs now
                if self.enospc is not None:
                    self.enospc.set_at_risk(bool(self._at_risk))
                # Objects appear with their first sample: wait for it (a hung
                # file system is found unresponsive within statvfs_timeout).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.daemon.statvfs_timeout + 1.0):
                        await self.sampler.first_round()
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
                await cancel_all(tasks)
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            if self._tick is not None:
                self._tick.cancel()
            self.notifier.close()

    def status_line(self) -> str:
        """systemd's STATUS=: what runs and how much it watches."""
        sources = ", ".join(f"{n}" for n in self.backends if n not in self.failed)
        return (f"{len(self.engine.mounts)} mounts, {len(self.states)} file systems "
                f"watched; mounts via {self.mount_source.name}; running {sources}")

    def _reload_quietly(self) -> None:
        with contextlib.suppress(FsmondError, OSError):
            self.reload()


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

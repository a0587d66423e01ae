"""The notification policy, pure: views in, Show/Close out."""

from __future__ import annotations

from dataclasses import replace

from fsmond.notify.config import parse_notify_config
from fsmond.notify.policy import CRITICAL, NORMAL, Close, Condition, FsView, Policy, Show
from fsmond.notify.wording import df_size, duration, home_relative, known_mount_point

GIB = 1 << 30
FS = "/org/fsmond/FsMon1/fs/0_45"
BASE = FsView(FS, "ext4", ("/srv",), size=10 * GIB, available=6 * GIB, files=1000,
              files_available=900, percent_available=60.0)


def at(level: str, available: float = 0, **kw: object) -> FsView:
    avail = int(available * GIB) or {"ok": 6, "lower": 4, "upper": 1}[level] * GIB
    return replace(BASE, level=level, available=avail,
                   percent_available=100 * avail / BASE.size, **kw)  # type: ignore[arg-type]


def kinds(actions: list[Show | Close]) -> list[str]:
    return [a.condition.kind if isinstance(a, Show) else "close" for a in actions]


def test_lower_then_upper_then_clear_is_one_notification_replaced_then_closed() -> None:
    p = Policy()
    assert p.update(at("ok")) == []
    [lower] = p.update(at("lower"))
    assert isinstance(lower, Show) and lower.urgency == NORMAL
    assert lower.wording.summary == "Low disk space on /srv"
    [upper] = p.update(at("upper"))
    assert isinstance(upper, Show) and upper.urgency == CRITICAL and upper.path == FS
    assert p.update(at("ok")) == [Close(FS)]


def test_numbers_and_mount_points_changing_send_nothing() -> None:
    p = Policy()
    p.update(at("lower"))
    assert p.update(at("lower", 3.5)) == []
    many = (*(f"/srv/bind/{i}" for i in range(1000)), "/srv")
    assert p.update(at("lower", 3.4, mount_points=many)) == []


def test_getting_better_updates_an_open_notification_and_never_opens_one() -> None:
    p = Policy()
    p.update(at("upper"))
    assert kinds(p.update(at("lower"))) == ["lower"]  # the open one says so
    p.closed(FS)  # the user dismissed it
    assert p.update(at("upper")) != []  # worse again: notified
    p.closed(FS)
    assert p.update(at("lower")) == []  # better, nothing open: quiet


def test_ignore_holds_until_the_next_level() -> None:
    p = Policy()
    p.update(at("lower"))
    assert p.ignore(FS) == [Close(FS)]
    assert p.ignores == {"/srv": Condition("lower")} and p.ignores_changed
    assert p.update(at("lower", 3)) == []
    assert kinds(p.update(at("upper"))) == ["upper"]
    assert p.ignores == {}


def test_ignore_is_forgotten_when_it_recovers_past_the_level_and_falls_again() -> None:
    p = Policy()
    p.update(at("lower"))
    p.ignore(FS)
    assert p.update(at("ok")) == []
    assert p.ignores == {}
    assert kinds(p.update(at("lower"))) == ["lower"]


def test_an_ignored_upper_level_stays_quiet_from_lower_back_to_upper_only_after_clearing() -> None:
    p = Policy()
    p.update(at("upper"))
    p.ignore(FS)
    assert p.update(at("upper", 0.5)) == []
    assert p.update(at("lower")) == []  # recovered past upper: the ignore goes, quietly
    assert kinds(p.update(at("upper"))) == ["upper"]  # and falling again notifies


def test_ignores_persisted_from_an_earlier_run_hold_at_start() -> None:
    p = Policy(ignores={"/srv": Condition("lower")})
    assert p.update(at("lower")) == []
    assert kinds(p.update(replace(at("upper"), available=0))) == ["no-space"]


def test_no_space_and_errors_are_worse_than_levels() -> None:
    p = Policy()
    p.update(at("upper"))
    assert kinds(p.update(replace(at("upper"), available=0))) == ["no-space"]
    [err] = p.update(replace(at("upper"), available=0, error_count=1, last_error="EXT4-fs x"))
    assert isinstance(err, Show) and err.condition.kind == "error" and err.urgency == CRITICAL
    assert "EXT4-fs x" in err.wording.body


def test_errors_from_before_the_agent_are_no_news_and_a_restart_of_fsmond_ends_nothing() -> None:
    p = Policy()
    assert p.update(at("ok", error_count=5, last_error="old")) == []
    assert kinds(p.update(at("ok", error_count=6, last_error="new"))) == ["error"]
    # fsmond restarted: its count starts again (tmpfs) and resync finds the object
    assert p.resync([at("ok", error_count=0)]) == []
    assert kinds(p.update(at("ok", error_count=1))) == ["error"]  # one more: worse


def test_dismissing_an_error_shows_nothing_else_until_something_changes() -> None:
    p = Policy()
    p.update(at("lower"))
    p.update(at("lower", error_count=1))
    assert p.closed(FS) == []
    assert p.update(at("lower", 3.9, error_count=1)) == []


def test_read_only_needs_the_kernels_read_only_event() -> None:
    p = Policy()
    p.update(at("ok"))
    assert p.update(at("ok", read_only=True)) == []  # an admin's remount,ro
    [ro] = p.event(FS, "read-only", {"message": "Remounting filesystem read-only"})
    assert isinstance(ro, Show) and ro.urgency == CRITICAL
    assert "Remounting filesystem read-only" in ro.wording.body
    assert p.update(at("ok", read_only=True)) == []
    assert p.update(at("ok")) == [Close(FS)]  # remounted rw


def test_read_only_images_and_read_only_superblocks_never_notify() -> None:
    p = Policy()
    assert p.update(replace(at("upper", available=0), fstype="squashfs")) == []
    assert p.update(replace(at("upper", available=0), path=FS + "x", read_only=True)) == []


def test_fsmond_restarting_resynchronises_without_repeating() -> None:
    p = Policy()
    p.update(at("lower"))
    other = replace(at("upper"), path=FS + "0", mount_points=("/data",))
    p.update(other)
    assert p.resync([at("lower")]) == [Close(FS + "0")]  # gone meanwhile: closed


def test_a_new_notification_server_gets_what_is_still_true() -> None:
    p = Policy()
    p.update(at("lower"))
    p.update(replace(at("upper"), path=FS + "0"))
    p.closed(FS + "0")
    assert [a.path for a in p.server_reset()] == [FS]  # the dismissed one stays dismissed


def test_classes_and_globs_from_the_configuration() -> None:
    cfg = parse_notify_config('classes = ["err"]\nexclude = ["~/mnt/*"]\n')
    p = Policy(cfg.filter("/home/u"), home="/home/u")
    assert p.update(at("upper")) == []  # thr is not wanted
    assert kinds(p.update(at("upper", error_count=1))) == ["error"]  # err is
    p2 = Policy(cfg.filter("/home/u"), home="/home/u")
    mnt = replace(at("ok"), mount_points=("/home/u/mnt/usb",))
    p2.update(mnt)
    assert p2.update(replace(mnt, error_count=1)) == []  # excluded


def test_wording_names_the_mount_point_people_know_in_dfs_units() -> None:
    view = replace(at("lower"), mount_points=("/home/u/data/x", "/home/u/data"),
                   available=int(1.5 * GIB), percent_available=15.0, seconds_to_full=5400)
    p = Policy(home="/home/u")
    [show] = p.update(view)
    assert isinstance(show, Show) and show.mount_point == "/home/u/data"
    assert show.wording.summary == "Low disk space on ~/data"
    assert show.wording.body == "1.5G free of 10G (15% free). Full in about 2 hours at this rate."


def test_df_units_match_df() -> None:
    # `df -h` on tmpfs mounts of these sizes said so (coreutils 9.1)
    for n, shown in ((0, "0"), (4096, "4.0K"), (100 << 10, "100K"), (1 << 20, "1.0M"),
                     (1500 << 10, "1.5M"), (10240000, "9.8M"), (10 << 20, "10M"),
                     (150 << 20, "150M"), (1023 << 20, "1023M"), (1 << 30, "1.0G")):
        assert df_size(n) == shown, n
    assert df_size((1 << 30) - 1) == "1.0G"


def test_small_pieces() -> None:
    assert known_mount_point(["/var/lib/x", "/srv", "/mnt"]) == "/mnt"
    assert home_relative("/home/u", "/home/u/") == "~"
    assert home_relative("/home/user2", "/home/u") == "/home/user2"
    assert duration(30) == "less than a minute" and duration(60) == "about 1 minute"
    assert duration(86400 * 3) == "about 3 days"

"""The user's ignores on disk: $XDG_STATE_HOME/fsmond/notify-ignores.json.

Written whole to a temporary file and renamed over the old one, so a crash
never leaves half a file; a file that cannot be read is logged and treated
as no ignores (an ignore is a convenience, never a reason not to start).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from fsmond.notify.policy import RANKS, Condition

log = logging.getLogger(__name__)


def state_dir(environ: dict[str, str]) -> Path:
    base = environ.get("XDG_STATE_HOME") or os.path.join(environ.get("HOME", "~"),
                                                          ".local", "state")
    return Path(base) / "fsmond"


def load_ignores(path: Path) -> dict[str, Condition]:
    try:
        data = json.loads(path.read_text())
        return {str(mp): Condition(str(c["kind"]), int(c.get("errors", 0)))
                for mp, c in data["ignored"].items() if c["kind"] in RANKS}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("%s: cannot read the ignores (%s); starting with none", path, e)
        return {}


def save_ignores(path: Path, ignores: dict[str, Condition]) -> None:
    data = {"version": 1, "ignored": {mp: {"kind": c.kind, "errors": c.errors}
                                      for mp, c in sorted(ignores.items())}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)

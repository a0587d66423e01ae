"""Pure walk over a fanotify read() buffer: events and their info records.

Both fanotify groups (mount events, file-system errors) read the same framing:
`struct fanotify_event_metadata` followed by info records, each a
`fanotify_event_info_header` (type, pad, len) and its body. No length read
from the buffer is trusted: a record that does not fit ends the walk, and
what came before it is kept.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

FAN_Q_OVERFLOW = 0x4000
_META = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_INFO = struct.Struct("=BBH")  # info_type, pad, len


def fanotify_events(buf: bytes) -> Iterator[tuple[int, dict[int, bytes]]]:
    """(mask, {info type: info body}) for each whole event in the buffer."""
    off = 0
    while off + _META.size <= len(buf):
        event_len, _vers, _res, meta_len, mask, _fd, _pid = _META.unpack_from(buf, off)
        end = off + event_len
        if event_len < _META.size or meta_len < _META.size or end > len(buf):
            return
        infos: dict[int, bytes] = {}
        info = off + meta_len
        while info + _INFO.size <= end:
            itype, _pad, ilen = _INFO.unpack_from(buf, info)
            if ilen < _INFO.size or info + ilen > end:
                break
            infos[itype] = buf[info + _INFO.size:info + ilen]
            info += ilen
        yield mask, infos
        off = end

"""The session store: one capture session on disk (core module — imports no stage).

Layout::

    DIR/session.yaml              rig config snapshot (cfg.to_yaml()), snapshot id, software, created
    DIR/captures.jsonl            append-only journal, one JSON line per capture attempt
    DIR/raw/<capture-id>/…        defocused.jpg, all_in_focus.jpg, depth_000.png…, depth_fused.png,
                                  ir.png, truth/, capture.yaml (names in rig.core.records)
    DIR/raw/.tmp-<id>-a<n>-<pid>/ an attempt in progress (renamed to raw/<id>/ only when complete)
    DIR/registered/<capture-id>/… written later by registration

Crash safety: every file is written to a temporary name, fsynced and renamed; a capture's folder is
renamed into place only when all its files are written and verified; the journal line is written
last (after the rename and an fsync of the folder), in a single ``write`` followed by ``fsync``. A
torn last journal line (kill -9 during that write) is ignored on read and cut off by the next
append; a complete ``raw/<id>/`` without its journal line (kill between the rename and the line) is
adopted on resume (:meth:`Session.recover`). Nothing already captured is ever deleted.

Journal line fields: capture_id, scene_id, scene_index, attempt, status (``ok`` | ``retrying`` —
this attempt failed and another follows | ``failed`` — the last attempt failed | ``interrupted`` —
stopped by Ctrl-C or a full disk, redone on resume), error (one line or null), t_start / t_end
(ISO 8601 UTC), t_start_monotonic_s, duration_s; ok lines add files, bytes and sha256 ({file: hex
SHA-256}, computed before the rename that publishes the capture; :meth:`Session.verify` checks it).
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

from rig.core import __version__
from rig.core.config import RigConfig, rig_config_from_dict
from rig.core.errors import ConfigError, RigError
from rig.core.records import CAPTURE_META_NAME, Capture, capture_from_dict

SESSION_FILE = "session.yaml"
JOURNAL_FILE = "captures.jsonl"
LOCK_FILE = ".lock"
RAW_DIR = "raw"
REGISTERED_DIR = "registered"
SESSION_FORMAT = "deep-dfd-session/1"
STATUSES = ("ok", "retrying", "failed", "interrupted")
TMP_PREFIX = ".tmp-"
ORPHAN_PREFIX = ".orphan-"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


class StorageFull(RigError):
    """The session's disk is (nearly) full: capture stopped cleanly, earlier captures intact."""

    exit_code = 4


def utc_now_iso() -> str:
    """Current wall time, ISO 8601 UTC with milliseconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def capture_id_for(scene_index: int) -> str:
    """The capture id of scene ``scene_index`` ('c00042')."""
    return f"c{int(scene_index):05d}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


# ------------------------------------------------------------------------------- file verification
def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's SOF marker, or None when there is none."""
    i = 2
    n = len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
        i += 2 + length
    return None


_STDERR_LOCK = threading.Lock()
_LIBJPEG_WARNINGS = ("Corrupt JPEG data", "Premature end of JPEG", "Invalid JPEG", "Bogus", "Unsupported marker")


def _decode_catching_libjpeg(buf: Any, flags: int) -> tuple[Any, str | None]:
    """cv2.imdecode with libjpeg's warnings caught: libjpeg writes "Corrupt JPEG data: …" to the C
    stderr and still returns pixels, so fd 2 is pointed at a temporary file for the decode. Returns
    (image or None, the first libjpeg warning or None); any other text goes on to stderr."""
    import cv2
    import tempfile

    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            img = cv2.imdecode(buf, flags)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode("utf-8", "replace")
    warnings = [ln.strip() for ln in text.splitlines() if ln.strip().startswith(_LIBJPEG_WARNINGS)]
    rest = "".join(ln + "\n" for ln in text.splitlines() if ln.strip() and ln.strip() not in warnings)
    if rest:
        sys.stderr.write(rest)
    return img, (warnings[0] if warnings else None)


def verify_image_file(path: Path) -> tuple[int, ...]:
    """Decode an image file once; returns its array shape ((H, W) or (H, W, C)). Raises ValueError
    (one line) when it is missing, empty, truncated (JPEG without its end-of-image marker, PNG without
    IEND), corrupt (a JPEG that libjpeg warns about) or undecodable. JPEGs are decoded at half size
    (every entropy-coded byte is still read); their shape comes from the frame header."""
    import cv2
    import numpy as np

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path.name}: cannot read ({e.strerror or e})") from None
    if not data:
        raise ValueError(f"{path.name}: empty file")
    suffix = path.suffix.lower()
    buf = np.frombuffer(data, np.uint8)
    if suffix in (".jpg", ".jpeg"):
        if data[:2] != b"\xff\xd8" or b"\xff\xd9" not in data[-16:]:
            raise ValueError(f"{path.name}: truncated JPEG ({len(data)} bytes, no end-of-image marker)")
        size = jpeg_size(data)
        img, warning = _decode_catching_libjpeg(buf, cv2.IMREAD_REDUCED_GRAYSCALE_2)
        if img is None or img.size == 0 or size is None:
            raise ValueError(f"{path.name}: not decodable")
        if warning:
            raise ValueError(f"{path.name}: corrupt JPEG data (libjpeg: {warning})")
        return (size[0], size[1], 3)
    if suffix == ".png":
        if data[:8] != b"\x89PNG\r\n\x1a\n" or b"IEND" not in data[-16:]:
            raise ValueError(f"{path.name}: truncated PNG ({len(data)} bytes, no IEND chunk)")
    else:
        return (len(data),)  # raw formats (NEF, CR2…): only non-empty is checked
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ValueError(f"{path.name}: not decodable")
    return tuple(img.shape)


def capture_files(capture: Capture) -> list[str]:
    """Relative paths of a capture's image files (as listed in its record)."""
    files = [capture.defocused.file, capture.all_in_focus.file]
    if capture.depth is not None:
        files += list(capture.depth.files) + [capture.depth.fused_file]
        if capture.depth.ir_file:
            files.append(capture.depth.ir_file)
    files += [str(f) for f in capture.extra.get("truth_files", [])]
    return files


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_files(folder: Path, files: list[str]) -> dict[str, str]:
    """{relative path: SHA-256} of ``files`` under ``folder`` (for the journal, before publishing)."""
    return {f: sha256_file(Path(folder) / f) for f in files}


def capture_file_path(folder: Path, rel: str, session_root: Path | None = None) -> Path:
    """``folder / rel`` for a file named in a capture record; ConfigError (one line) for an absolute
    path, a '..' component, or a link that leads outside ``session_root`` (default ``folder``)."""
    rel_s = str(rel)
    parts = Path(rel_s).parts
    if not rel_s or Path(rel_s).is_absolute() or ".." in parts or "\\" in rel_s:
        raise ConfigError(f"{folder / CAPTURE_META_NAME}: file {rel_s!r} points outside the capture folder "
                          "(absolute or '..' paths are refused)")
    path = Path(folder) / rel_s
    root = Path(session_root if session_root is not None else folder).resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise ConfigError(f"{path}: a link that leads outside the session folder ({resolved}); refused")
    return path


@dataclass(frozen=True)
class Damage:
    """One damaged or missing file of an ok capture."""

    capture_id: str
    file: str
    reason: str

    def line(self) -> str:
        return f"{self.capture_id}: {self.file}: {self.reason}"


def check_capture_files(folder: Path, files: list[str], sha256: dict[str, str] | None, capture_id: str,
                        session_root: Path | None = None) -> list[Damage]:
    """Re-hash (when checksums were journaled) and fully decode each image of one capture; returns
    what is missing, changed or undecodable (empty when intact)."""
    out: list[Damage] = []
    for rel in files:
        try:
            path = capture_file_path(folder, rel, session_root)
        except ConfigError as e:
            out.append(Damage(capture_id, str(rel), str(e).split(": ", 1)[-1]))
            continue
        if not path.is_file():
            out.append(Damage(capture_id, rel, "missing"))
            continue
        expected = (sha256 or {}).get(rel)
        if expected is not None and sha256_file(path) != expected:
            out.append(Damage(capture_id, rel, "checksum mismatch (the file changed after capture)"))
            continue
        if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
            try:
                verify_image_file(path)
            except ValueError as e:
                out.append(Damage(capture_id, rel, str(e).split(": ", 1)[-1]))
    return out


# ---------------------------------------------------------------------------------------- journal
def parse_journal(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """(entries, torn): every complete line; a torn last line (no trailing newline and not valid
    JSON) is skipped and reported as torn. Any other bad line raises ConfigError (one line)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing (not a session folder, or the journal was deleted)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    torn = False
    entries: list[dict[str, Any]] = []
    for no, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        entries.append(_parse_line(path, no, raw))
    if tail.strip():
        try:
            entries.append(_parse_line(path, len(lines) + 1, tail))
        except ConfigError:
            torn = True
    return entries, torn


def _parse_line(path: Path, no: int, raw: bytes) -> dict[str, Any]:
    try:
        entry = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: line {no}: not valid JSON ({e.__class__.__name__}); the journal is corrupt "
                          "(only a torn last line is repaired automatically)") from None
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: line {no}: expected a JSON object, got {type(entry).__name__}")
    cid = entry.get("capture_id")
    if not isinstance(cid, str) or not _ID_RE.match(cid):
        raise ConfigError(f"{path}: line {no}: capture_id: expected an id like 'c00001', got {cid!r}")
    if entry.get("status") not in STATUSES:
        raise ConfigError(f"{path}: line {no}: status: expected one of {', '.join(STATUSES)}, "
                          f"got {entry.get('status')!r}")
    att = entry.get("attempt")
    if isinstance(att, bool) or not isinstance(att, int) or att < 1:
        raise ConfigError(f"{path}: line {no}: attempt: expected an integer >= 1, got {att!r}")
    si = entry.get("scene_index")
    if si is not None and (isinstance(si, bool) or not isinstance(si, int) or si < 0):
        raise ConfigError(f"{path}: line {no}: scene_index: expected an integer >= 0, got {si!r}")
    return entry


# ---------------------------------------------------------------------------------------- session
@dataclass
class Session:
    """An open session folder. Build with :meth:`create` or :meth:`open`."""

    path: Path
    config: RigConfig
    meta: dict[str, Any]

    # -- creation --------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path | str, cfg: RigConfig, planned_scenes: int | None = None) -> "Session":
        """A new, empty session at ``path`` (created; an existing empty folder is fine).

        RigError when ``path`` is already a session (resume it instead) or a non-empty folder/file.
        """
        path = Path(path)
        if (path / SESSION_FILE).exists():
            raise RigError(f"{path}: already a capture session; continue it with --resume "
                           "(or choose a new --session folder)")
        if path.exists() and not path.is_dir():
            raise RigError(f"{path}: exists and is not a folder")
        if path.is_dir() and any(path.iterdir()):
            raise RigError(f"{path}: folder exists and is not empty (and is not a session); choose a new folder")
        created_dir = not path.exists()
        created_top = path  # the outermost folder this call creates (parents of a new --save too)
        while not created_top.parent.exists() and created_top.parent != created_top:
            created_top = created_top.parent
        meta = {
            "format": SESSION_FORMAT,
            "software": f"deep-dfd-rig {__version__}",
            "created": utc_now_iso(),
            "snapshot_id": cfg.snapshot_id(),
            "planned_scenes": None if planned_scenes is None else int(planned_scenes),
            "config": yaml.safe_load(cfg.to_yaml()),
        }
        from rig.core.imageio import atomic_write_bytes

        try:
            (path / RAW_DIR).mkdir(parents=True, exist_ok=True)
            fd = os.open(path / JOURNAL_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.fsync(fd)
            os.close(fd)
            # session.yaml last: its presence marks a complete session folder
            atomic_write_bytes(path / SESSION_FILE, yaml.safe_dump(meta, sort_keys=False).encode())
            _fsync_dir(path)
        except OSError as e:
            if is_disk_full(e):
                raise StorageFull(f"{path}: disk full while creating the session") from None
            raise RigError(f"{path}: cannot create the session: {e.strerror or e}") from None
        session = cls(path=path, config=cfg, meta=meta)
        session._created_dir = created_dir
        session._created_top = created_top if created_dir else None
        return session

    def discard_if_unused(self) -> bool:
        """Remove a session this process just created when nothing was captured into it (e.g. the
        camera could not be opened), so the same command can simply be run again. Returns True if
        removed; never touches a session with journal lines or files under raw/."""
        raw = self.path / RAW_DIR
        if self.journal() or (raw.is_dir() and any(raw.iterdir())):
            return False
        for name in (SESSION_FILE, JOURNAL_FILE, LOCK_FILE):
            try:
                (self.path / name).unlink()
            except FileNotFoundError:
                pass
        if raw.is_dir():
            raw.rmdir()
        if getattr(self, "_created_dir", False) and not any(self.path.iterdir()):
            self.path.rmdir()
        return True

    def discard_if_no_data(self, bookkeeping: tuple[str, ...] = ()) -> bool:
        """Remove an output session this process just created (a live or replay run) when it failed
        before any data landed in it: every file is empty, or is session.yaml or one of the
        ``bookkeeping`` paths (relative, e.g. 'live/live.yaml'). Returns True if removed."""
        keep_out = {SESSION_FILE, LOCK_FILE, *bookkeeping}
        if not self.path.is_dir():
            return False
        for p in self.path.rglob("*"):
            if p.is_file() and p.stat().st_size > 0 and str(p.relative_to(self.path)) not in keep_out:
                return False
        if getattr(self, "_created_dir", False):
            shutil.rmtree(self.path, ignore_errors=True)
            top, q = getattr(self, "_created_top", None), self.path.parent
            while top is not None and self.path != top and q != top.parent and q.is_dir() and not any(q.iterdir()):
                q.rmdir()  # the parents this run created, while empty
                q = q.parent
        else:  # an empty folder the user gave: empty it again
            for child in self.path.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        return True

    @classmethod
    def open(cls, path: Path | str) -> "Session":
        """An existing session; ConfigError (one line, exit 2) for a malformed folder."""
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: no such session folder")
        if not path.is_dir():
            raise ConfigError(f"{path}: not a folder (a session is a folder with {SESSION_FILE})")
        sf = path / SESSION_FILE
        if not sf.is_file():
            raise ConfigError(f"{path}: not a capture session (no {SESSION_FILE}); create one with `rig capture`")
        try:
            meta = yaml.safe_load(sf.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{sf}: cannot read: {getattr(e, 'strerror', None) or e}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{sf}: invalid YAML{where}: {getattr(e, 'problem', None) or 'parse error'}") from None
        if not isinstance(meta, dict):
            raise ConfigError(f"{sf}: expected a mapping with format, config, snapshot_id, got {type(meta).__name__}")
        if meta.get("format") != SESSION_FORMAT:
            raise ConfigError(f"{sf}: format: expected {SESSION_FORMAT!r}, got {meta.get('format')!r}")
        if not isinstance(meta.get("config"), dict):
            raise ConfigError(f"{sf}: config: missing or not a mapping (the rig config snapshot)")
        if not isinstance(meta.get("snapshot_id"), str):
            raise ConfigError(f"{sf}: snapshot_id: missing or not a string")
        planned = meta.get("planned_scenes")
        if planned is not None and (isinstance(planned, bool) or not isinstance(planned, int) or planned < 1):
            raise ConfigError(f"{sf}: planned_scenes: expected an integer >= 1 or null, got {planned!r}")
        cfg = rig_config_from_dict(meta["config"], src=f"{sf} (config)")
        if not (path / JOURNAL_FILE).is_file():
            raise ConfigError(f"{path / JOURNAL_FILE}: missing; the session folder is damaged")
        session = cls(path=path, config=cfg, meta=meta)
        session.journal()  # validate now: a corrupt journal is reported at open
        return session

    # -- identity ------------------------------------------------------------------------------
    @property
    def snapshot_id(self) -> str:
        return str(self.meta["snapshot_id"])

    @property
    def planned_scenes(self) -> int | None:
        return self.meta.get("planned_scenes")

    # -- folders ---------------------------------------------------------------------------------
    @staticmethod
    def _check_id(capture_id: str) -> str:
        if not isinstance(capture_id, str) or not _ID_RE.match(capture_id):
            raise RigError(f"invalid capture id {capture_id!r} (letters, digits, '_' and '-')")
        return capture_id

    def raw_dir(self, capture_id: str) -> Path:
        return self.path / RAW_DIR / self._check_id(capture_id)

    def registered_dir(self, capture_id: str) -> Path:
        return self.path / REGISTERED_DIR / self._check_id(capture_id)

    def attempt_dir(self, capture_id: str, attempt: int) -> Path:
        """A fresh temporary folder for one attempt (never looks like a capture)."""
        p = self.path / RAW_DIR / f"{TMP_PREFIX}{self._check_id(capture_id)}-a{int(attempt)}-{os.getpid()}"
        if p.exists():
            shutil.rmtree(p)
        p.mkdir(parents=True)
        return p

    def commit_capture(self, tmp_dir: Path, capture_id: str) -> Path:
        """Rename a complete attempt folder to raw/<id>/ (atomically) and fsync the parent."""
        dest = self.raw_dir(capture_id)
        for sub in [p for p in tmp_dir.rglob("*") if p.is_dir()] + [tmp_dir]:
            _fsync_dir(sub)
        if dest.exists():  # never overwrite: an older folder is kept aside
            self._set_aside(dest)
        os.rename(tmp_dir, dest)
        _fsync_dir(dest.parent)
        return dest

    def _set_aside(self, folder: Path) -> Path:
        n = 0
        while True:
            target = folder.parent / f"{ORPHAN_PREFIX}{folder.name}-{n}"
            if not target.exists():
                os.rename(folder, target)
                return target
            n += 1

    # -- journal ---------------------------------------------------------------------------------
    @property
    def journal_path(self) -> Path:
        return self.path / JOURNAL_FILE

    def journal(self) -> list[dict[str, Any]]:
        """Every journal entry in order (a torn last line is left out)."""
        return parse_journal(self.journal_path)[0]

    def journal_is_torn(self) -> bool:
        return parse_journal(self.journal_path)[1]

    def append_journal(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Append one line (single write + fsync); a torn last line is cut off first.

        OSError (e.g. ENOSPC) propagates; a partially written line is rolled back when possible.
        """
        line = json.dumps(entry, sort_keys=False, default=str, separators=(",", ":"))
        if "\n" in line:
            raise ValueError("journal entries must serialise to one line")
        _parse_line(self.journal_path, 0, line.encode())  # validate before writing
        data = (line + "\n").encode("utf-8")
        fd = os.open(self.journal_path, os.O_RDWR | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                size = self._repair_tail(fd, size)
            try:
                n = os.write(fd, data)
                if n != len(data):
                    raise OSError(errno.ENOSPC, "short write to the journal")
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, size)  # leave no torn line behind
                except OSError:
                    pass
                raise
        finally:
            os.close(fd)
        return entry

    def _repair_tail(self, fd: int, size: int) -> int:
        """Cut a torn last line (or terminate a complete one); returns the new size."""
        start = max(0, size - (1 << 20))
        chunk = os.pread(fd, size - start, start)
        cut = chunk.rfind(b"\n")
        tail = chunk[cut + 1:]
        try:
            _parse_line(self.journal_path, 0, tail)
            os.write(fd, b"\n")  # a complete line without its newline: keep it
            return size + 1
        except ConfigError:
            new = start + cut + 1
            os.ftruncate(fd, new)
            os.fsync(fd)
            return new

    def latest(self) -> dict[str, dict[str, Any]]:
        """The last journal entry of each capture id (insertion order = first appearance)."""
        out: dict[str, dict[str, Any]] = {}
        for e in self.journal():
            out[e["capture_id"]] = e
        return out

    # -- queries ---------------------------------------------------------------------------------
    def read_capture(self, capture_id: str) -> Capture:
        """Parse raw/<id>/capture.yaml; ConfigError (one line) when missing or malformed."""
        p = self.raw_dir(capture_id) / CAPTURE_META_NAME
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: missing, but the journal lists capture {capture_id} as ok") from None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"{p}: unreadable capture record ({type(e).__name__})") from None
        try:
            cap = capture_from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{p}: malformed capture record ({type(e).__name__}: {e})") from None
        if cap.capture_id != capture_id:
            raise ConfigError(f"{p}: capture_id {cap.capture_id!r} does not match its folder {capture_id!r}")
        return cap

    def completed(self) -> list[Capture]:
        """Captures whose latest journal status is ok, in journal order."""
        return [self.read_capture(cid) for cid, e in self.latest().items() if e["status"] == "ok"]

    def done_scene_indices(self) -> set[int]:
        return {int(e["scene_index"]) for e in self.latest().values()
                if e["status"] == "ok" and e.get("scene_index") is not None}

    def next_scene_index(self) -> int:
        """The smallest scene index without an ok capture (where a resumed session continues)."""
        done = self.done_scene_indices()
        i = 0
        while i in done:
            i += 1
        return i

    def pending_scene_indices(self, total: int) -> list[int]:
        """Scene indices in [0, total) still to capture."""
        done = self.done_scene_indices()
        return [i for i in range(int(total)) if i not in done]

    # -- space, locking, recovery ------------------------------------------------------------------
    def free_mb(self) -> float:
        return shutil.disk_usage(self.path).free / 1e6

    def ensure_free_space(self, min_free_mb: float) -> None:
        """StorageFull (one line) when less than ``min_free_mb`` MB is free on the session's disk."""
        free = self.free_mb()
        if free < float(min_free_mb):
            n = sum(1 for e in self.latest().values() if e["status"] == "ok")
            raise StorageFull(f"{self.path}: only {free:.1f} MB free (session.min_free_mb is {min_free_mb:g} MB); "
                              f"stopped cleanly with {n} capture(s) intact — free space, then resume with --resume")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive writer lock (released by the OS even on kill -9)."""
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RigError(f"{self.path}: the session is in use by another `rig capture`") from None
            yield
        finally:
            os.close(fd)

    def recover(self) -> list[str]:
        """Before resuming: remove unfinished attempt folders, adopt complete capture folders that
        lack their journal line (kill between rename and journal). Returns one note per action."""
        notes: list[str] = []
        raw = self.path / RAW_DIR
        raw.mkdir(exist_ok=True)
        latest = self.latest()
        for p in sorted(raw.iterdir()):
            if p.name.startswith(TMP_PREFIX) and p.is_dir():
                shutil.rmtree(p)
                notes.append(f"removed unfinished attempt {p.name}")
                continue
            if p.name.startswith(".") or not p.is_dir() or not _ID_RE.match(p.name):
                continue
            entry = latest.get(p.name)
            if entry is not None and entry["status"] == "ok":
                continue
            try:
                cap = self.read_capture(p.name)
                for f in capture_files(cap):
                    verify_image_file(p / f)
            except (ConfigError, ValueError) as e:
                aside = self._set_aside(p)
                notes.append(f"kept incomplete folder {p.name} aside as {aside.name} ({e})")
                continue
            scene_index = cap.extra.get("scene_index")
            self.append_journal({
                "capture_id": p.name, "scene_id": cap.scene_id,
                "scene_index": int(scene_index) if isinstance(scene_index, int) else None,
                "attempt": int(cap.extra.get("attempt", 1)), "status": "ok", "error": None,
                "t_start": cap.t_wall, "t_end": utc_now_iso(), "recovered": True,
                "files": capture_files(cap) + [CAPTURE_META_NAME],
                "sha256": sha256_files(p, capture_files(cap) + [CAPTURE_META_NAME]),
                "bytes": folder_bytes(p),
            })
            notes.append(f"adopted complete capture {p.name} (its journal line was missing)")
        if self.journal_is_torn():
            notes.append("a torn last journal line will be cut off at the next append")
        return notes

    # -- integrity ---------------------------------------------------------------------------------
    def check_capture(self, capture_id: str) -> list[Damage]:
        """What is damaged or missing in one ok capture: its record first, then every file it names
        (re-hashed against the journal's SHA-256 when recorded, and fully decoded)."""
        entry = self.latest().get(capture_id, {})
        folder = self.raw_dir(capture_id)
        sha = entry.get("sha256") if isinstance(entry.get("sha256"), dict) else None
        meta_damage = check_capture_files(folder, [CAPTURE_META_NAME], sha, capture_id, self.path)
        if meta_damage:
            return meta_damage
        try:
            cap = self.read_capture(capture_id)
        except ConfigError as e:
            return [Damage(capture_id, CAPTURE_META_NAME, str(e).split(": ", 1)[-1])]
        files = list(dict.fromkeys(capture_files(cap) + [str(f) for f in entry.get("files", []) or []
                                                         if str(f) != CAPTURE_META_NAME]))
        return check_capture_files(folder, files, sha, capture_id, self.path)

    def verify(self, on_capture: Any = None) -> tuple[int, list[Damage]]:
        """(number of ok captures checked, every damage found); ``on_capture(cid, damages)`` per capture."""
        damages: list[Damage] = []
        ids = [cid for cid, e in self.latest().items() if e["status"] == "ok"]
        for cid in ids:
            found = self.check_capture(cid)
            damages += found
            if on_capture is not None:
                on_capture(cid, found)
        return len(ids), damages

    # -- summary ---------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts and sizes for ``rig sessions show``."""
        entries = self.journal()
        latest = self.latest()
        attempts: dict[str, int] = {}
        for e in entries:
            attempts[e["capture_id"]] = attempts.get(e["capture_id"], 0) + 1
        ok = [c for c, e in latest.items() if e["status"] == "ok"]
        failed = [c for c, e in latest.items() if e["status"] == "failed"]
        interrupted = [c for c, e in latest.items() if e["status"] in ("interrupted", "retrying")]
        retried = [c for c in ok if attempts.get(c, 1) > 1]
        raw = self.path / RAW_DIR
        reg = self.path / REGISTERED_DIR
        return {
            "path": str(self.path), "name": self.config.name, "snapshot_id": self.snapshot_id,
            "created": self.meta.get("created"), "software": self.meta.get("software"),
            "planned_scenes": self.planned_scenes, "journal_lines": len(entries),
            "journal_torn": self.journal_is_torn(),
            "captures_ok": len(ok), "captures_failed": len(failed), "captures_retried": len(retried),
            "captures_interrupted": len(interrupted), "attempts": len(entries),
            "failed_ids": failed, "retried_ids": retried,
            "raw_files": sum(1 for p in raw.rglob("*") if p.is_file() and not _hidden(p, raw)) if raw.is_dir() else 0,
            "raw_bytes": folder_bytes(raw) if raw.is_dir() else 0,
            "registered_captures": sum(1 for p in reg.iterdir() if p.is_dir()) if reg.is_dir() else 0,
            "registered_bytes": folder_bytes(reg) if reg.is_dir() else 0,
            "unfinished_attempts": sorted(p.name for p in raw.glob(TMP_PREFIX + "*")) if raw.is_dir() else [],
            "free_mb": round(self.free_mb(), 1),
        }


def _hidden(p: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)


def folder_bytes(folder: Path) -> int:
    """Total size of the visible files under ``folder`` (hidden temp/orphan folders excluded)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and not _hidden(p, Path(folder)))

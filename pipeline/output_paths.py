"""Check the run's output paths (overlay video, JSON lines, report, MCAP) before anything
expensive starts, so a bad path fails in seconds with one line naming it, not after the
model has loaded with a message about a hidden segment file.

Nothing is created or changed here: the output files are opened only once the run starts
(a failed run must leave nothing behind). Writability is probed on the nearest existing
directory with an unnamed ``O_TMPFILE`` file, which never appears in the directory; where
the filesystem does not support that, ``os.access`` decides.
"""

from __future__ import annotations

import errno
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig

# Extensions with a default codec (pipeline/sinks/video_writer.py); others must name an
# FFmpeg muxer, which then picks its own default video codec.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")


def check_output_paths(config: PipelineConfig) -> None:
    """Raise ``ConfigError`` (key, user's path, reason) for an output that cannot be written."""
    out = config.output
    for key, path in (("output.video", out.video), ("output.save_results", out.save_results),
                      ("output.report", out.report), ("output.mcap", out.mcap)):
        if path is not None:
            try:
                reason = _unwritable(Path(path))
            except OSError as err:  # e.g. a parent we may not even look into
                reason = err.strerror or str(err)
            if reason:
                raise ConfigError(f"{key}: cannot write '{path}': {reason}")
    if out.video is not None:
        _check_video_extension(out.video)
    if out.mcap is not None and importlib.util.find_spec("mcap_ros2") is None:
        raise ConfigError(f"output.mcap: '{out.mcap}' needs the mcap and mcap-ros2-support packages "
                          "(pip install 'segstream[robotics]')")


def _check_video_extension(path: str) -> None:
    ext = Path(path).suffix.lower()
    if ext in VIDEO_EXTENSIONS or (ext and ext[1:] in _muxer_extensions()):
        return
    shown = f"'{ext}'" if ext else "no extension"
    raise ConfigError(f"output.video: '{path}': unknown video format ({shown}); use "
                      f"{', '.join(VIDEO_EXTENSIONS)}, or 'none' for no video")


def _muxer_extensions() -> set[str]:
    """File extensions FFmpeg's muxers claim (what ``av.open(path, 'w')`` can guess)."""
    import av

    found: set[str] = set()
    for name in av.formats_available:
        try:
            found.update(av.format.ContainerFormat(name, "w").extensions)
        except (ValueError, av.FFmpegError):  # an input-only format
            continue
    return found


def _unwritable(path: Path) -> str | None:
    """Why ``path`` cannot be written (its missing parents created), or None if it can."""
    if path.is_dir():
        return "it is a directory"
    if path.exists():
        # an existing file is replaced (video: renamed over) or rewritten: both need the
        # directory, and rewriting needs the file itself
        if not os.access(path, os.W_OK):
            return "permission denied"
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"'{ancestor}' is not a directory"
    return _cannot_create_in(ancestor)


def _cannot_create_in(directory: Path) -> str | None:
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"directory '{directory}' is not writable"
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600)
    except AttributeError:  # no O_TMPFILE on this platform
        return None
    except OSError as err:
        if err.errno == errno.EOPNOTSUPP and not _pseudo_filesystem(directory):
            return None  # the filesystem lacks O_TMPFILE: os.access said yes
        return f"directory '{directory}' is not writable ({err.strerror or err})"
    os.close(fd)
    return None


def _pseudo_filesystem(directory: Path) -> bool:
    """True under /proc or /sys: their directories pass ``os.access`` for root, yet can
    hold no files (and lack O_TMPFILE, like some real filesystems do)."""
    resolved = directory.resolve()
    return any(resolved == Path(root) or Path(root) in resolved.parents for root in ("/proc", "/sys"))

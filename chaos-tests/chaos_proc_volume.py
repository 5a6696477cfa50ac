"""Small file systems for the disk-full scenario (#14 item 3): a sparse image file, formatted
ext4 and loop-mounted over a PostgreSQL member's folder before the cluster starts, then filled
and freed by a test, and unmounted and deleted afterwards.

Mounted over the member's folder (`StateDir.member_dir`) rather than its data directory:
pg_basebackup and Patroni want the data directory itself empty (a fresh ext4 root holds
`lost+found`) and Patroni may remove and recreate it, which a mount point refuses. The launcher
creates, chowns and chmods (0700) the member folder and its subfolders itself, so a mount made
before `up` gets the right owner and mode. Root only (mount, losetup).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deploy.state import DbUser

FILLER = "filler"  # the file a test fills the volume with, in the volume's root


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


@dataclass(frozen=True)
class Volume:
    image: Path
    mount_point: Path

    @property
    def filler(self) -> Path:
        return self.mount_point / FILLER

    def free_bytes(self) -> int:
        """Bytes an unprivileged user may still write (the volume has no root reserve)."""
        st = os.statvfs(self.mount_point)
        return st.f_bavail * st.f_frsize

    def fill(self) -> int:
        """Fill the volume as the database user (whose quota it is, as a runaway file of
        PostgreSQL's would be); the bytes taken."""
        user = DbUser.current().name
        before = self.free_bytes()
        # fallocate takes nearly all at once; dd then takes what block rounding left.
        script = (
            f"fallocate -l {max(before - (1 << 20), 0)} {self.filler} || true; "
            f"dd if=/dev/zero of={self.filler}.tail bs=4k status=none 2>/dev/null || true"
        )
        subprocess.run(["runuser", "-u", user, "--", "sh", "-c", script], check=True)
        return before - self.free_bytes()

    def free(self) -> None:
        """Remove what `fill` wrote."""
        for p in (self.filler, self.filler.with_name(f"{FILLER}.tail")):
            p.unlink(missing_ok=True)


@contextlib.contextmanager
def mounted(image: Path, mount_point: Path, *, size_mb: int) -> Iterator[Volume]:
    """A fresh ext4 file system of `size_mb` (a sparse file: it takes disk space only as it
    is written) mounted at `mount_point` while inside; unmounted, the mount point emptied and
    the image deleted afterwards, also when the block fails."""
    image.parent.mkdir(parents=True, exist_ok=True)
    with open(image, "wb") as fh:
        fh.truncate(size_mb << 20)
    # -m 0: no blocks reserved for root, so a full volume is full for everyone.
    _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
    mount_point.mkdir(parents=True, exist_ok=True)
    try:
        _run("mount", "-o", "loop", str(image), str(mount_point))
        try:
            (mount_point / "lost+found").rmdir()
            yield Volume(image, mount_point)
        finally:
            # A process still holding a file there (a PostgreSQL that outlived its cluster)
            # makes the unmount busy: lazy unmount detaches it anyway, the loop device goes
            # when the last holder does.
            with contextlib.suppress(subprocess.CalledProcessError):
                _run("umount", str(mount_point))
            if os.path.ismount(mount_point):
                _run("umount", "-l", str(mount_point))
    finally:
        image.unlink(missing_ok=True)

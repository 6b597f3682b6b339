"""Run directories sent back through Ray: a run on another machine packs its directory into
one tar archive (the task's return value, carried by Ray's object store); the sweep unpacks
it into the sweep directory under a new name, in one rename, so the directory appears whole
or not at all. Unpacking accepts only plain files and folders inside the archive's own root
(tarfile's "data" filter): an archive cannot write elsewhere or make links."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path


def pack(run_dir: Path) -> bytes:
    """``run_dir`` as a gzipped tar archive whose root is the run directory's name."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(run_dir, arcname=run_dir.name)
    return buffer.getvalue()


def unpack(archive: bytes, root: Path) -> Path:
    """Unpack an archive of `pack` into ``root`` as a new run directory (a suffix is added if
    the name is taken); returns its path."""
    staging = root / f".incoming-{id(archive)}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            names = {Path(m.name).parts[0] for m in tar.getmembers()}
            if len(names) != 1:
                raise ValueError(f"a run archive holds one run directory, not {sorted(names)}")
            tar.extractall(staging, filter="data")
        (name,) = names
        return _place(staging / name, root / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _place(source: Path, wanted: Path) -> Path:
    path, n = wanted, 1
    while True:
        try:
            path.mkdir()  # claims the name; the rename below replaces the empty folder
        except FileExistsError:
            n += 1
            path = wanted.with_name(f"{wanted.name}-{n}")
            continue
        source.replace(path)
        return path

"""Hot modules compiled with mypyc, used only while they match their sources
(docs/decisions/0007-compiled-hot-modules.md).

The segment engine and the Avro wire code run for every event; compiled with mypyc (part of mypy, which
is pinned) they cost less CPU per event, and under the GIL CPU per event is a worker's throughput. The
build is optional: without it, or with ``OMNISEG_PURE_PYTHON=1``, everything runs as plain Python with
the same results.

Besides :data:`MODULES`, the build generates one module, ``omniseg_avro_readers``, with a typed reader
for the current version of every topic schema (``row_decoder.generate_module``), and compiles it too;
``row_decoder.compile_reader`` takes a reader from it when the schema's content matches, and
generates one at run time otherwise.

``omniseg compiled build`` compiles :data:`MODULES` into ``streams/_compiled/`` (outside the
source tree's import path) and records each source's SHA-256 in ``manifest.json``. At import,
:func:`install` puts a finder in front of the normal one that loads the compiled modules, but only if
every recorded source is unchanged and the build is for this interpreter. One edited source turns off
all of them (compiled modules call each other directly, so a partly stale set is not safe), and a
warning says how to rebuild. ``scripts/setup.sh`` builds it when a C compiler is there; the Docker
image builds it in a separate stage.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import io
import json
import logging
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger("streams.compiled")

# The modules on the per-event paths: the revenue definition, the segment engine and profile, the Avro
# readers/writers of the resolver, the segment stage and the sinks, and the sinks' record -> column
# steps. Each must compile with mypyc (strictly typed, no monkeypatching of its classes).
MODULES: tuple[str, ...] = (
    "streams.domain.revenue",
    "streams.kafka.partitioner",
    "streams.domain.segments.events",
    "streams.domain.segments.profile",
    "streams.domain.segments.changes",
    "streams.domain.segments.preparation",
    "streams.domain.segments.comparisons",
    "streams.domain.segments.features",
    "streams.domain.segments.derived",
    "streams.domain.segments.compiler",
    "streams.domain.segments.recording",
    "streams.domain.segments.plans",
    "streams.domain.segments.merge",
    "streams.domain.segments.engine",
    "streams.wire.identity",
    "streams.wire.segments",
    "streams.wire.row_decoder",
    "streams.sinks.events_table",
    "streams.sinks.identity_tables",
    "streams.sinks.segment_tables",
)

PACKAGE_ROOT = Path(__file__).resolve().parent  # .../streams
DEFAULT_DIR = PACKAGE_ROOT / "_compiled"
MANIFEST = "manifest.json"
DISABLE_ENV = "OMNISEG_PURE_PYTHON"
FORMAT = 2


@dataclass(frozen=True)
class Status:
    """Whether the compiled modules are in use, and if not, why."""

    active: bool
    reason: str
    directory: Path

    def describe(self) -> str:
        return "compiled (mypyc)" if self.active else f"pure Python ({self.reason})"


_status: Status | None = None


def source_path(module: str) -> Path:
    """The ``.py`` file of a module of this package."""
    parts = module.split(".")
    assert parts[0] == "streams", module
    return PACKAGE_ROOT.joinpath(*parts[1:]).with_suffix(".py")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _interpreter() -> str:
    return f"{sys.implementation.cache_tag} {sysconfig.get_config_var('EXT_SUFFIX')}"


class _Finder(importlib.abc.MetaPathFinder):
    """Finds the compiled extension of each module in ``files`` (module name -> ``.so`` path)."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        file = self.files.get(fullname)
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def _check(directory: Path) -> tuple[dict[str, Path], str]:
    """(module -> extension file, "") if the build in ``directory`` is usable, else ({}, why not)."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return {}, "not built (omniseg compiled build)"
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            return {}, f"{manifest_path} is from another omniseg version; rebuild"
        if manifest.get("interpreter") != _interpreter():
            return {}, f"built for {manifest.get('interpreter')}, this is {_interpreter()}; rebuild"
        modules: dict[str, dict[str, str]] = manifest["modules"]
        if set(modules) != set(MODULES):
            return {}, "built for another list of modules; rebuild"
        stale = [name for name, entry in modules.items() if _digest(source_path(name)) != entry["sha256"]]
        if stale:
            changed = ", ".join(str(source_path(name).relative_to(PACKAGE_ROOT.parent)) for name in stale)
            return {}, f"stale: {changed} changed since the build; rebuild"
        files = {name: directory / entry["file"] for name, entry in modules.items()}
        files.update({name: directory / file for name, file in manifest["support"].items()})
        files.update({name: directory / file for name, file in manifest["generated"].items()})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {}, f"unreadable build in {directory}: {exc!r}; rebuild"
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        return {}, f"missing {', '.join(missing)}; rebuild"
    return files, ""


def install(directory: Path | None = None) -> Status:
    """Use the compiled modules if they match their sources (once per process; idempotent)."""
    global _status
    if _status is not None:
        return _status
    directory = _directory(directory)
    if os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes"):
        _status = Status(False, f"{DISABLE_ENV} is set", directory)
        return _status
    files, why = _check(directory)
    already = [name for name in MODULES if name in sys.modules]
    if files and already:
        why = f"{', '.join(already)} imported before streams.compiled.install()"
        files = {}
    if not files:
        if (directory / MANIFEST).is_file():  # built, but not usable as it is
            log.warning("omniseg: running pure Python: compiled modules %s", why)
        _status = Status(False, why, directory)
        return _status
    sys.meta_path.insert(0, _Finder(files))
    _status = Status(True, "", directory)
    return _status


def status() -> Status:
    """What :func:`install` decided (it runs when ``streams`` is imported)."""
    return install()


def check(directory: Path | None = None) -> str:
    """Why the build in ``directory`` (default: the one :func:`install` uses) is unusable; "" if usable."""
    return _check(directory or _directory())[1]


def _directory(default: Path | None = None) -> Path:
    """``OMNISEG_COMPILED_DIR`` if set, else ``default``, else the one beside the sources."""
    return Path(os.environ.get("OMNISEG_COMPILED_DIR") or default or DEFAULT_DIR)


def _generated_readers() -> str:
    """The Avro readers of every topic schema's current version, as one module for mypyc.

    They depend only on the schema (named by its content) and on ``row_decoder``'s generator (whose
    hash the manifest records): a schema changed since the build is read by a reader generated at
    run time, as without a build.
    """
    from streams.wire import codecs as serde
    from streams.wire.row_decoder import generate_module

    codecs = [value for value in vars(serde).values() if isinstance(value, serde.AvroCodec)]
    return generate_module([codec.current.parsed for codec in codecs])


def build(directory: Path = DEFAULT_DIR, *, echo: Any = print) -> Path:
    """Compile :data:`MODULES` with mypyc into ``directory`` (replaced as a whole when done)."""
    from streams.wire.row_decoder import PRECOMPILED_MODULE

    try:
        from mypyc.build import mypycify
        from setuptools import Distribution
    except ImportError as exc:
        raise RuntimeError(
            f"building needs mypy (mypyc) and setuptools: {exc}. Install the test extra: "
            "pip install -c constraints.txt -e '.[test]'"
        ) from exc
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        raise RuntimeError(f"building needs a C compiler ({cc}; Debian: apt-get install gcc python3-dev)")
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not include.is_file():
        raise RuntimeError(
            f"building needs Python's headers ({include} is missing; Debian: apt-get install python3-dev)"
        )
    sources = {name: source_path(name) for name in MODULES}
    generated_source = _generated_readers()
    started = time.monotonic()
    echo(f"compiling {len(MODULES)} modules and the Avro readers with mypyc (about two minutes)")
    directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".compiled-", dir=directory.parent) as tmp:
        out, temp = Path(tmp) / "out", Path(tmp) / "temp"
        generated = Path(tmp) / "generated" / f"{PRECOMPILED_MODULE}.py"
        generated.parent.mkdir()
        generated.write_text(generated_source)
        cwd = os.getcwd()
        os.chdir(PACKAGE_ROOT.parent)  # mypyc names modules from paths relative to the project root
        try:
            relative = [str(path.relative_to(PACKAGE_ROOT.parent)) for path in sources.values()]
            relative.append(str(generated))
            notes = io.StringIO()
            with contextlib.redirect_stdout(notes):  # mypyc's notes ("treating ... as list")
                extensions = mypycify(relative, opt_level="3", debug_level="0")
            dist = Distribution({"name": "omniseg-compiled", "ext_modules": extensions})
            dist.script_args = ["-q", "build_ext", "--build-lib", str(out), "--build-temp", str(temp)]
            dist.parse_command_line()
            dist.run_commands()
        except SystemExit as exc:  # mypycify exits on a type error, after printing it
            raise RuntimeError(f"mypyc failed ({exc}):\n{notes.getvalue()}") from None
        finally:
            os.chdir(cwd)
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        modules = {}
        for name, path in sources.items():
            file = Path(*name.split(".")).with_suffix("").as_posix() + suffix
            if not (out / file).is_file():
                raise RuntimeError(f"mypyc did not produce {file}")
            modules[name] = {"file": file, "sha256": _digest(path)}
        support = {
            path.name[: -len(suffix)]: path.name for path in out.glob(f"*{suffix}") if "__mypyc" in path.name
        }
        readers = PRECOMPILED_MODULE + suffix
        if not (out / readers).is_file():
            raise RuntimeError(f"mypyc did not produce {readers}")
        manifest = {
            "format": FORMAT,
            "interpreter": _interpreter(),
            "modules": modules,
            "support": support,
            "generated": {PRECOMPILED_MODULE: readers},
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        old = Path(tmp) / "old"
        if directory.exists():
            directory.rename(old)
        out.rename(directory)
    echo(f"compiled modules written to {directory} in {time.monotonic() - started:.0f}s")
    return directory

"""Build the optional Cython extensions in native/ into the gateway package.

Every module in native/ has a pure-Python twin in gateway/, so the package works without them:
when Cython or a C compiler is missing, or a build fails, the install goes on with the pure-Python
build and says so in one line. ``KEFU_PUREPYTHON=1`` at install time skips the build on purpose.
"""

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
SOURCES = sorted((HERE / "native").glob("*.pyx"))
DIRECTIVES = {
    "language_level": "3",
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "embedsignature": True,
}


class OptionalBuildExt(build_ext):
    """Build what can be built; a failure falls back to the pure-Python twins."""

    def run(self):
        self._failed = []
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers…
            self._failed.append(("the native extensions", exc))
        if self._failed:  # one warning for all of them
            names = ", ".join(name for name, _ in self._failed)
            print(f"kefu: could not build {names} ({self._failed[0][1]}); using the pure-Python twins", file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._failed.append((ext.name, exc))


def extensions():
    if not SOURCES or os.environ.get("KEFU_PUREPYTHON") == "1":
        return []
    try:
        from Cython.Build import cythonize
        from setuptools import Extension
    except ImportError:
        print("kefu: Cython is not installed; using the pure-Python implementation", file=sys.stderr)
        return []
    trace = os.environ.get("KEFU_CYTHON_TRACE") == "1"  # line tracing for coverage builds
    directives = dict(DIRECTIVES, linetrace=trace, profile=trace)
    macros = [("CYTHON_TRACE_NOGIL", "1")] if trace else []
    exts = [
        Extension(f"gateway._{src.stem}_c", [str(src.relative_to(HERE))], define_macros=macros, extra_compile_args=["-O3"])
        for src in SOURCES
    ]
    annotate = os.environ.get("KEFU_CYTHON_ANNOTATE") == "1"  # native/<stem>.html: the C behind each line
    # Generated C that is newer than its .pyx is reused, whatever directives made it: an annotated
    # or traced build regenerates everything.
    return cythonize(exts, compiler_directives=directives, annotate=annotate, force=annotate or trace, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})

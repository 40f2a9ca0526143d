"""Build script: package metadata lives in pyproject.toml; this file builds the Cython extensions."""
import glob
import os

from setuptools import setup


def extensions():
    sources = sorted(glob.glob(os.path.join("fastconv", "**", "*.pyx"), recursive=True))
    if not sources:
        return []
    from Cython.Build import cythonize
    from setuptools import Extension

    modules = [Extension(src[:-4].replace(os.sep, "."), [src], extra_compile_args=["-O3"]) for src in sources]
    return cythonize(modules, compiler_directives={"language_level": 3})


setup(ext_modules=extensions())

# SPDX-License-Identifier: Apache-2.0
# Stubs for modules Datadog's test agent imports that Debian does not package and its trace
# checks never use (OTLP protobufs, DDSketch for client stats, AWS request signing, VCR).
import importlib.abc
import importlib.machinery
import sys
import types

_STUBBED = ("opentelemetry", "ddsketch", "requests_aws4auth", "vcr")


class _Anything(type):
    def __getattr__(cls, name):
        return _Anything(name, (object,), {})

    def __call__(cls, *a, **kw):
        return _Anything(cls.__name__, (object,), {})


class _Module(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(name, (object,), {})


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in _STUBBED:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = _Module(spec.name)
        m.__path__ = []
        return m

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _Finder())

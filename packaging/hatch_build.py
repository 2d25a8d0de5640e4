"""Build hook: make an editable install coexist with the PyPI client `durable-streams`.

Both distributions use the import name `durable_streams`. Installed as wheels they merge
into one directory. In editable mode our tree is only added to sys.path, and the client's
regular package (it has an `__init__.py`) wins over our namespace package, which hides
`durable_streams.server`. The editable wheel therefore also installs a small finder that
resolves `durable_streams.server` to the work tree, whoever owns `durable_streams`."""

from __future__ import annotations

import os
import tempfile

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

FINDER = '''"""durable-streams-server, editable: `durable_streams.server` from the work tree."""
import importlib.util
import sys

_ROOT = {root!r}


class _ServerFinder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "durable_streams.server":
            return None
        return importlib.util.spec_from_file_location(
            name, _ROOT + "/__init__.py", submodule_search_locations=[_ROOT])


if _ServerFinder not in sys.meta_path:
    sys.meta_path.insert(0, _ServerFinder)
'''


class EditableServerHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if version != "editable":
            return
        out = tempfile.mkdtemp(prefix="ds-editable-")
        root = os.path.join(self.root, "durable_streams", "server")
        finder = os.path.join(out, "_durable_streams_server_finder.py")
        with open(finder, "w") as f:
            f.write(FINDER.format(root=root))
        pth = os.path.join(out, "_durable_streams_server_finder.pth")
        with open(pth, "w") as f:
            f.write("import _durable_streams_server_finder\n")
        build_data["force_include_editable"][finder] = "_durable_streams_server_finder.py"
        build_data["force_include_editable"][pth] = "_durable_streams_server_finder.pth"

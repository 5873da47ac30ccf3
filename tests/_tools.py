"""Load a module of tools/ by path, under its own name (tools/ is not a package, and a tool named
like an installed package would shadow it if tools/ were on sys.path)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_tool(name: str):
    """tools/<name>.py as the module ``tfshap_tools_<name>``, loaded once."""
    module_name = f"tfshap_tools_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, TOOLS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]

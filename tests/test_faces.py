"""The packages' faces: every name in ``__all__`` is there, and is what it says (not a
submodule of the same name)."""

from __future__ import annotations

import importlib
import types

import pytest


@pytest.mark.parametrize("package", ["prune_env", "agents", "baselines", "prune_env.nn",
                                     "prune_env.envs", "prune_env.runs", "prune_env.measure",
                                     "prune_env.data", "prune_env.training", "prune_env.config"])
def test_every_public_name_resolves(package):
    module = importlib.import_module(package)
    for name in module.__all__:
        if name == "__version__":
            continue
        value = getattr(module, name)
        assert not isinstance(value, types.ModuleType), f"{package}.{name} is a module"
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018

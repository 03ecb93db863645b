"""Each package's ``__all__`` is exactly its public names, and every name resolves."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ("fl_core", "mpc", "he")


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_resolve_and_are_unique(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), "a name is listed twice"
    for item in exported:
        assert getattr(module, item) is not None, item


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and not isinstance(v, type(sys)) and n != "annotations"
    }
    lazy = set(getattr(module, "_LAZY", {}))
    assert public - set(module.__all__) == set(), "public but not exported"
    assert set(module.__all__) - public - lazy == set(), "exported but not defined"


@pytest.mark.parametrize(
    ("name", "forbidden"),
    [
        ("mpc", ("fl_core", "grpc", "google.protobuf", "torch")),
        ("he", ("fl_core", "grpc", "google.protobuf", "torch")),
        ("fl_core", ("torch", "opacus", "tenseal")),
    ],
)
def test_importing_loads_only_what_it_needs(name: str, forbidden: tuple[str, ...]) -> None:
    code = (
        f"import sys, {name}; bad = [m for m in {forbidden!r} if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing {name} loaded {out.stdout.strip()}"

"""The public API is small, sorted and complete (as httpx's tests/test_exported_members.py)."""

import comfynb


def test_all_is_sorted_and_unique() -> None:
    assert comfynb.__all__ == sorted(set(comfynb.__all__))


def test_every_exported_name_resolves() -> None:
    for name in comfynb.__all__:
        assert getattr(comfynb, name) is not None, name


def test_public_module_names_are_exported() -> None:
    public = {name for name in vars(comfynb) if not name.startswith("_")}
    # submodules and annotations are not API; everything else that is public must be in __all__
    modules = {name for name, value in vars(comfynb).items() if type(value).__name__ == "module"}
    assert public - modules - {"annotations", "TYPE_CHECKING", "Any"} <= set(comfynb.__all__)

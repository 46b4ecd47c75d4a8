"""The public face: what `import charter` offers, pinned so that changes are deliberate."""

from __future__ import annotations

import inspect
import types

import charter

PUBLIC = [
    "ActionDenied",
    "ActionRequest",
    "AgentProfile",
    "AgentState",
    "ApprovalRequired",
    "AsyncClient",
    "BudgetUsage",
    "Bundle",
    "Charter",
    "CharterError",
    "CharterUnavailable",
    "CheckpointError",
    "Client",
    "Conflict",
    "Decision",
    "DecisionRecord",
    "EmbeddedClient",
    "EventError",
    "Factor",
    "Forbidden",
    "GrantRefused",
    "Halt",
    "IdempotencyConflict",
    "LedgerError",
    "LedgerIntegrityError",
    "NotFound",
    "PolicyInvalid",
    "Problem",
    "ProofError",
    "Reason",
    "ReplayError",
    "ReplayReport",
    "RequestInvalid",
    "RouteRef",
    "TooManyPending",
    "Verdict",
    "__version__",
    "bundle_from_content",
    "context",
    "decide",
    "governed",
    "load_bundle",
]

#: Dunder names that belong in `__all__`; every other exported name is public-looking.
ALLOWED_PRIVATE = {"__version__"}


class TestExportedMembers:
    def test_all_is_pinned(self) -> None:
        """`charter.__all__` is exactly the reviewed list: a change to it is deliberate."""
        assert charter.__all__ == PUBLIC

    def test_all_is_sorted_without_duplicates(self) -> None:
        """`__all__` is sorted and names each member once."""
        assert charter.__all__ == sorted(set(charter.__all__))

    def test_every_name_is_importable(self) -> None:
        """Each name in `__all__` is an attribute of the package, and `import *` gives them all."""
        namespace: dict[str, object] = {}
        exec("from charter import *", namespace)  # noqa: S102 - the statement users write
        namespace.pop("__builtins__")
        assert sorted(namespace) == charter.__all__
        for name in charter.__all__:
            assert getattr(charter, name) is namespace[name]

    def test_nothing_private_is_exported(self) -> None:
        """No underscore name is exported except the version."""
        private = {name for name in charter.__all__ if name.startswith("_")}
        assert private == ALLOWED_PRIVATE

    def test_every_public_attribute_is_exported(self) -> None:
        """Every public, non-module attribute of the package is listed in `__all__`."""
        public = {
            name
            for name, value in vars(charter).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)
        }
        assert public == set(charter.__all__) - ALLOWED_PRIVATE

    def test_members_come_from_charter_and_are_documented(self) -> None:
        """Each exported class or function is Charter's own and carries a docstring."""
        for name in charter.__all__:
            member = getattr(charter, name)
            if inspect.isclass(member) or inspect.isfunction(member):
                assert member.__module__.startswith("charter."), name
                assert inspect.getdoc(member), name

    def test_version_is_a_string(self) -> None:
        """`charter.__version__` is a non-empty version string."""
        assert isinstance(charter.__version__, str)
        assert charter.__version__[0].isdigit()


def test_every_exported_error_is_in_the_one_hierarchy() -> None:
    """Each exception `charter` exports derives from `CharterError`.

    The verification errors stay `ValueError`s as well, for code written against 0.1.
    """
    errors = [
        obj
        for name in charter.__all__
        if isinstance(obj := getattr(charter, name), type) and issubclass(obj, BaseException)
    ]
    assert {e.__name__ for e in errors} >= {"TooManyPending", "Forbidden", "EventError"}
    assert all(issubclass(e, charter.CharterError) for e in errors)
    for error in (charter.EventError, charter.CheckpointError, charter.ProofError):
        assert issubclass(error, charter.LedgerError)
        assert issubclass(error, ValueError)

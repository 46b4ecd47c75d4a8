"""Shipped examples: the policy bundle that `charter demo` and `charter init` use."""

from pathlib import Path

__all__ = ["EXAMPLE_POLICY"]

#: The folder of the shipped example policy bundle.
EXAMPLE_POLICY = Path(__file__).parent / "policy"

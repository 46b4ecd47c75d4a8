"""Runtime controls: what the ledger's history says of halts, autonomy, budgets, breakers.

Pure: no I/O; the service folds committed ledger entries into this state.
"""

from charter.controls._autonomy import CONTROLLER, AutonomyController, Demotion
from charter.controls._breakers import BreakerBook, Circuit, CircuitKey, circuit_key
from charter.controls._budgets import BudgetSpending
from charter.controls._state import FOLDED_KINDS, ServiceState

__all__ = [
    "CONTROLLER",
    "FOLDED_KINDS",
    "AutonomyController",
    "BreakerBook",
    "BudgetSpending",
    "Circuit",
    "CircuitKey",
    "Demotion",
    "ServiceState",
    "circuit_key",
]

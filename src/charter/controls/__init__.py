"""Runtime controls: what the ledger's history says about halts, autonomy and budgets.

Pure: no I/O; the service folds committed ledger entries into this state.
"""

from charter.controls._budgets import BudgetSpending
from charter.controls._state import FOLDED_KINDS, ServiceState

__all__ = ["FOLDED_KINDS", "BudgetSpending", "ServiceState"]

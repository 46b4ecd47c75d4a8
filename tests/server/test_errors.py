"""The one table from error codes to HTTP statuses."""

from __future__ import annotations

import pytest

from charter.errors import CharterError, GrantRefused, LedgerError, NotFound, RequestInvalid
from charter.server import STATUS
from charter.server._errors import from_charter_error


class TestStatusTable:
    """Gateway errors keep their code and field and get the status the table gives."""

    @pytest.mark.parametrize(
        ("code", "status"),
        [
            ("grant_unknown", 403),
            ("grant_expired", 403),
            ("args_mismatch", 403),
            ("grant_used", 409),
        ],
    )
    def test_grant_refusals(self, code: str, status: int):
        """A used grant is a conflict; every other refusal is forbidden."""
        assert from_charter_error(GrantRefused(code, "no")).status == status == STATUS[code]

    def test_request_invalid_keeps_its_field(self):
        """The field a request check names reaches the client."""
        error = from_charter_error(RequestInvalid("args.amount", "must be a number"))
        assert (error.status, error.code, error.field) == (422, "request_invalid", "args.amount")

    def test_not_found(self):
        """An unknown decision is 404."""
        assert from_charter_error(NotFound("no decision `x`")).status == 404

    def test_unmapped_codes_fall_back_by_kind(self):
        """A code the table lacks is 503 from the ledger and 422 otherwise, never a 500."""
        assert from_charter_error(LedgerError("disk", code="disk_full")).status == 503
        assert from_charter_error(CharterError("odd", code="something_new")).status == 422

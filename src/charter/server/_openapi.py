"""What the OpenAPI document says of every API route: its key, its answers, its body.

Every `/v1` route is declared with the same three things (the bearer key it needs, the
error answers it may give beside its own, and the JSON body it reads itself), so they
are written here once and each route passes `documented(...)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Security
from fastapi.security import HTTPBearer
from pydantic import BaseModel

from charter.server._schemas import ErrorBody

__all__ = ["body_reference", "documented", "responses", "secured"]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")


def secured() -> list[Any]:
    """The dependency that declares the bearer scheme; the handlers do the checking."""
    return [Security(_bearer)]


def responses(
    ok: type[BaseModel], *errors: int, descriptions: Mapping[int, str], ok_status: int = 200
) -> dict[int | str, dict[str, Any]]:
    """The answers of a route: `ok`, then 401, 403, `errors` and 503 in the error shape."""
    out: dict[int | str, dict[str, Any]] = {ok_status: {"model": ok}}
    for status in (401, 403, *errors, 503):
        out[status] = {"model": ErrorBody, "description": descriptions[status]}
    return out


def body_reference(model: type[BaseModel]) -> dict[str, Any]:
    """An `openapi_extra` declaring a JSON body the route reads itself.

    It refers to `model` by name: the app adds the models' schemas to the components.
    """
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def documented(
    ok: type[BaseModel],
    *errors: int,
    descriptions: Mapping[int, str],
    body: type[BaseModel] | None = None,
    more: Mapping[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of an API route's decorator besides its path and words.

    `more` adds answers of the route's own (a 201 beside the 200, say).
    """
    kwargs: dict[str, Any] = {
        "response_model": None,
        "responses": {**responses(ok, *errors, descriptions=descriptions), **(more or {})},
        "dependencies": secured(),
    }
    if body is not None:
        kwargs["openapi_extra"] = body_reference(body)
    return kwargs

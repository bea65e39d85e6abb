"""The published schema says what the daemon answers: a request that fails validation is a 400
with the daemon's error body (see ``http.install_error_handlers``), never FastAPI's default 422."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import FastAPI

from edgead.service.schemas import ErrorOut

_VALIDATION_REF = "#/components/schemas/HTTPValidationError"
_ERROR_REF = "#/components/schemas/ErrorOut"
INVALID = {"description": "invalid request: a parameter or body the schema refuses",
           "content": {"application/json": {"schema": {"$ref": _ERROR_REF}}}}


def _uses(node: Any, ref: str) -> bool:
    if isinstance(node, dict):
        return node.get("$ref") == ref or any(_uses(v, ref) for v in node.values())
    if isinstance(node, list):
        return any(_uses(v, ref) for v in node)
    return False


def rewrite(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace FastAPI's validation 422 by 400 with ErrorOut on every operation that validates input."""
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            responses = op.get("responses", {})
            default = responses.get("422")
            if default is not None and _uses(default, _VALIDATION_REF):
                del responses["422"]
            if op.get("parameters") or op.get("requestBody"):
                responses.setdefault("400", INVALID)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ErrorOut", ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}"))
    for name in ("HTTPValidationError", "ValidationError"):  # the first refers to the second
        rest = {k: v for k, v in components.items() if k != name}
        if name in components and not _uses([schema["paths"], rest], f"#/components/schemas/{name}"):
            del components[name]
    return schema


def install(app: FastAPI) -> None:
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = rewrite(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

"""The OpenAPI document the service publishes at ``/docs.json``: BentoML's, made to tell the
truth about this service.

BentoML generates the paths from the endpoints, but flattens the request and response models
(nullable fields lose their ``null``, the "exactly one of ``customer_id`` or ``features``"
rule is lost), documents error bodies with ``detail`` as a string (it is a list of pydantic
errors) and fills the info block with its own boilerplate. :func:`truthful_spec` rewrites the
document from our pydantic models (OpenAPI 3.1, so JSON Schema ``null`` is valid), one error
schema, the documented status codes of each endpoint, the bearer security scheme and the
package's name and version. :class:`OpenAPIMiddleware` serves it and gives every JSON error
body one shape (``{"error": str, "detail"?: [...]}``; BentoML answers some 4xx with a list).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel, TypeAdapter

from customer360.serving.campaign import CampaignPlanRequest, CampaignPlanResult
from customer360.serving.schemas import (
    SERVING_CONFIG,
    BatchItem,
    BatchRequest,
    ChurnResult,
    ClvResult,
    CustomerRequest,
    FeedbackRequest,
    FeedbackResult,
    LeadRequest,
    LeadScoreResult,
    NboResult,
    OpportunityRequest,
    OpportunityScoreResult,
    ProfileResult,
)
from customer360.serving.webapp.app import APP_PATH

REF = "#/components/schemas/{model}"
ERROR_SCHEMA = "Error"
SECURITY_SCHEME = "bearer"

# Endpoint -> (request model, response type, extra documented statuses besides 400/401/415/500).
ENDPOINTS: dict[str, tuple[type[BaseModel] | None, Any, tuple[int, ...]]] = {
    "churn": (CustomerRequest, ChurnResult, (404,)),
    "clv": (CustomerRequest, ClvResult, (404,)),
    "next_best_offer": (CustomerRequest, NboResult, (404,)),
    "customer360": (CustomerRequest, ProfileResult, (404,)),
    "churn_batch": (BatchRequest, list[BatchItem[ChurnResult]], ()),
    "clv_batch": (BatchRequest, list[BatchItem[ClvResult]], ()),
    "next_best_offer_batch": (BatchRequest, list[BatchItem[NboResult]], ()),
    "customer360_batch": (BatchRequest, list[BatchItem[ProfileResult]], ()),
    "feedback": (FeedbackRequest, FeedbackResult, (404, 503)),
    "schema_info": (None, dict[str, Any], ()),
}
# issue 16: the campaign planner
ENDPOINTS["campaign_plan"] = (CampaignPlanRequest, CampaignPlanResult, (404, 503))
# issue 15: lead and opportunity scores (404: unknown or closed id, or no such model served)
ENDPOINTS["lead_score"] = (LeadRequest, LeadScoreResult, (404,))
ENDPOINTS["opportunity_score"] = (OpportunityRequest, OpportunityScoreResult, (404,))

STATUS_TEXT = {
    400: "Invalid request: not JSON, a field of the wrong type or range, a missing or unknown "
    "field, or both / neither of customer_id and features. `error` says what and where; "
    "`detail` (pydantic validation errors) gives the field's path in `loc`.",
    401: "Missing or invalid bearer token (only when the service runs with a token).",
    404: "Unknown customer id (not in the served feature snapshot) or offer id; for "
    "/lead_score and /opportunity_score, an id not open in the snapshot or no such model "
    "served.",
    415: "The request body is not JSON (send Content-Type: application/json).",
    500: "Internal error; the server log has the cause (never caused by a request's content).",
    503: "The warehouse is busy (another process holds it); retry later.",
}

ERROR = {
    "type": "object",
    "title": ERROR_SCHEMA,
    "description": "Every error answer.",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What was wrong, where, and how to fix it."},
        "detail": {
            "type": "array",
            "description": "Validation errors (pydantic's), present on schema violations.",
            "items": {"type": "object"},
        },
    },
}


def package_version() -> str:
    try:
        return version("customer360")
    except PackageNotFoundError:  # a source tree without an installed distribution
        return "0+unknown"


def _schema(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema of ``tp`` with its definitions moved into ``defs``."""
    schema = TypeAdapter(tp).json_schema(ref_template=REF)
    defs.update(schema.pop("$defs", {}))
    return schema


def _error_response(status: int) -> dict[str, Any]:
    return {
        "description": STATUS_TEXT[status],
        "content": {"application/json": {"schema": {"$ref": REF.format(model=ERROR_SCHEMA)}}},
    }


def truthful_spec(spec: Mapping[str, Any], *, token_required: bool) -> dict[str, Any]:
    """BentoML's OpenAPI document ``spec`` rewritten from our models (see module docstring).

    ``token_required`` says whether the running service asks for a bearer token (then the
    security requirement is mandatory, otherwise optional).
    """
    out = copy.deepcopy(dict(spec))
    out["openapi"] = "3.1.0"
    out["info"] = {
        "title": "customer360",
        "version": package_version(),
        "description": "Churn, CLV, next best offer and the integrated customer profile, "
        "scored by the champion models on the latest feature snapshot. Every endpoint takes "
        "and returns JSON. POST /schema_info lists the columns of a feature payload.",
    }
    # The web app's HTML pages and forms (mounted at APP_PATH) are not part of the JSON API.
    out["paths"] = {
        path: item
        for path, item in out.get("paths", {}).items()
        if path != APP_PATH and not path.startswith(APP_PATH + "/")
    }
    defs: dict[str, Any] = {}
    security: list[dict[str, list]] = [{SECURITY_SCHEME: []}]
    if not token_required:
        security.append({})
    for name, (request, response, statuses) in ENDPOINTS.items():
        op = out.get("paths", {}).get(f"/{name}", {}).get("post")
        if op is None:
            continue
        body = _schema(request, defs) if request is not None else {"type": "object"}
        op["requestBody"] = {
            "required": request is not None,  # /schema_info reads no body
            "content": {"application/json": {"schema": body}},
        }
        op["responses"] = {
            "200": {
                "description": "Successful Response",
                "content": {"application/json": {"schema": _schema(response, defs)}},
            },
            **{
                str(s): _error_response(s)
                for s in sorted({400, 401, 415, 500, *statuses})
            },
        }
        op["security"] = security
    components = out.setdefault("components", {})
    schemas = {
        k: v
        for k, v in components.get("schemas", {}).items()
        if not k.endswith("IODescriptor") and k not in {"InvalidArgument", "NotFound",
                                                        "InternalServerError"}
    }
    schemas.update(defs)
    schemas[ERROR_SCHEMA] = ERROR
    components["schemas"] = schemas
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": f"The value of ${SERVING_CONFIG.token_env_var} when the service "
            "was started with it; without it the API is open (loopback only).",
        }
    }
    return out


class OpenAPIMiddleware:
    """ASGI middleware: ``GET /docs.json`` answers :func:`truthful_spec`; a JSON error body
    that is a one-element list (BentoML's shape for some 4xx) is unwrapped to the object."""

    def __init__(self, app: Any, env_var: str = SERVING_CONFIG.token_env_var) -> None:
        self.app = app
        self.env_var = env_var
        self._spec: bytes | None = None

    def spec(self) -> bytes:
        if self._spec is None:
            from customer360.serving.service import Customer360

            raw = Customer360.openapi_spec.asdict()
            token = bool(os.environ.get(self.env_var))
            self._spec = json.dumps(truthful_spec(raw, token_required=token)).encode()
        return self._spec

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") == "/docs.json" and scope.get("method") == "GET":
            body = self.spec()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, _ErrorBodySend(send))


class _ErrorBodySend:
    """Wraps ``send``: buffers JSON error bodies (status >= 400) and sends them as one
    object; every other response passes through untouched."""

    def __init__(self, send: Callable) -> None:
        self.send = send
        self.start: dict | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = dict(message.get("headers") or [])
            is_json = headers.get(b"content-type", b"").startswith(b"application/json")
            if message["status"] >= 400 and is_json:
                self.start = message
                return
        elif kind == "http.response.body" and self.start is not None:
            self.chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = _one_error_object(b"".join(self.chunks))
            headers = [
                (k, v) for k, v in self.start.get("headers") or [] if k != b"content-length"
            ]
            headers.append((b"content-length", str(len(body)).encode()))
            await self.send({**self.start, "headers": headers})
            self.start = None
            await self.send({"type": "http.response.body", "body": body})
            return
        await self.send(message)


def _one_error_object(body: bytes) -> bytes:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]
    if isinstance(data, dict) and "error" in data:
        return json.dumps({**data, "error": _name_the_fields(data)}).encode()
    return json.dumps({"error": str(data)}).encode()


_FIXES = {
    "extra_forbidden": "unknown field: remove it",
    "missing": "required: add it",
    "literal_error": "use one of the listed values",
    "finite_number": "send a finite number",
}


def _name_the_fields(data: dict) -> str:
    """BentoML's validation message names only the model ("1 validation error for
    XIODescriptor"); say which field is wrong, what was wrong and how to fix it, from
    ``detail`` (pydantic's errors), keeping every other message as it is."""
    detail = data.get("detail")
    message = str(data["error"])
    if "validation error" not in message or not isinstance(detail, list) or not detail:
        return message
    named = field_errors(detail)
    if not named:
        return message
    return named + ". Fix the field and resend; GET /docs.json documents every field."


def field_errors(errors: list, whole: str = "request body") -> str:
    """Pydantic's ``errors()`` as one line: each field, what was wrong and the fix (the first
    five; ``whole`` names an error of the whole input). Shared by /campaign_plan's 400s and the
    campaigns page."""
    parts = []
    for err in errors[:5]:
        if not isinstance(err, dict):
            continue
        field = ".".join(str(p) for p in err.get("loc") or []) or whole
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        fix = _FIXES.get(str(err.get("type")))
        parts.append(f"{field}: {msg}" + (f" ({fix})" if fix else ""))
    if not parts:
        return ""
    return "; ".join(parts) + (f" (and {len(errors) - 5} more)" if len(errors) > 5 else "")

"""Per-input outcomes of a CRM batch call.

HubSpot's batch endpoints (``/crm/v3/objects/contacts/batch/{read,update,upsert}``, 100
inputs a call) answer in three ways, and a caller performing one action per input must tell
every input's fate apart:

- **200**: every input succeeded; ``results`` holds one object per input.
- **207 multi-status**: some succeeded (in ``results``), some failed (in ``errors``, each
  naming its inputs in ``context.ids``; a read's unknown ids come back as
  ``OBJECT_NOT_FOUND``).
- **a 4xx for the whole batch** (``VALIDATION_ERROR``, a duplicate id, a refused value):
  nothing was applied, though usually only one input was at fault. The connector then
  splits the batch in halves and tries again, down to single inputs, so one bad contact
  costs about ``2 * log2(n)`` extra calls and fails alone instead of failing 99 good ones.

A transient failure of a whole call (429 after the connector's retries, 5xx, no answer) is
recorded against each of its inputs: the caller retries them later, as it would one by one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors.crm.base import CRMRecord
from engine.errors import ConnectorError, PermanentConnectorError

#: Whole-batch answers that may be one input's fault: worth splitting the batch to find it.
SPLITTABLE_STATUSES = frozenset({400, 409, 422})


@dataclass
class CRMBatchResult:
    """What a batch call did for each input, keyed as the inputs were (email or CRM id).

    An input is in ``records`` (done; for a read, found), in ``errors`` (failed, with the
    error saying whether retrying can help), or, for a read only, in neither: not found.
    """

    keys: list[str] = field(default_factory=list)
    records: dict[str, CRMRecord] = field(default_factory=dict)
    errors: dict[str, ConnectorError] = field(default_factory=dict)
    requests: int = 0

    @property
    def missing(self) -> list[str]:
        """Inputs neither done nor failed: for a read, the ids the CRM does not know."""
        return [k for k in self.keys if k not in self.records and k not in self.errors]

    def merge(self, other: CRMBatchResult) -> None:
        self.records.update(other.records)
        self.errors.update(other.errors)
        self.requests += other.requests


def attribute(
    body: Mapping[str, Any],
    keys: Sequence[str],
    *,
    key_of: str,
    what: str,
    missing_is_error: bool,
) -> tuple[dict[str, dict[str, Any]], dict[str, ConnectorError]]:
    """Split a 200/207 answer into results and errors per input key.

    ``key_of`` is ``"email"`` (a result is matched by its ``email`` property) or ``"id"``
    (by the object id). An input with no result and no error naming it is an error for a
    write (``missing_is_error``) and "not found" for a read.
    """
    wanted = set(keys)
    results: dict[str, dict[str, Any]] = {}
    unmatched: list[dict[str, Any]] = []
    for result in body.get("results") or []:
        if not isinstance(result, dict):
            continue
        key = _result_key(result, key_of)
        if key in wanted:
            results[key] = result
        else:
            unmatched.append(result)
    errors: dict[str, ConnectorError] = {}
    unnamed: list[str] = []
    for error in body.get("errors") or []:
        if not isinstance(error, dict):
            continue
        named = [i for i in _error_ids(error, key_of) if i in wanted]
        message = describe_error(error)
        if not named:
            unnamed.append(message)
        not_found = error.get("category") == "OBJECT_NOT_FOUND"
        for key in named:
            if not_found and not missing_is_error:
                continue  # a read's unknown id: simply not there
            errors[key] = PermanentConnectorError(f"hubspot could not {what} {key}: {message}")
    rest = [k for k in keys if k not in results and k not in errors]
    if rest and unmatched and len(unmatched) == len(rest) and not body.get("errors"):
        # UNCONFIRMED that every result echoes its key; HubSpot answers in input order.
        results.update(zip(rest, unmatched, strict=True))
        rest = []
    if missing_is_error:
        detail = "; ".join(unnamed) or "no result and no error for it"
        for key in rest:
            errors[key] = PermanentConnectorError(f"hubspot could not {what} {key}: {detail}")
    return results, errors


def describe_error(error: Mapping[str, Any]) -> str:
    parts = [str(error.get("message") or "no message")]
    if error.get("category"):
        parts.append(f"category {error['category']}")
    return "; ".join(parts)


def _result_key(result: Mapping[str, Any], key_of: str) -> str:
    if key_of == "id":
        return str(result.get("id", ""))
    return str((result.get("properties") or {}).get("email") or "").lower()


def _error_ids(error: Mapping[str, Any], key_of: str) -> list[str]:
    context = error.get("context") or {}
    ids = context.get("ids") if isinstance(context, dict) else None
    found = [str(i) for i in ids] if isinstance(ids, list) else []
    if error.get("id"):
        found.append(str(error["id"]))
    return [i.lower() for i in found] if key_of == "email" else found

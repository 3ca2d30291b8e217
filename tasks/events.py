"""Prefect custom events and audit records: every outcome is both announced and recorded."""

from __future__ import annotations

from prefect.events import emit_event

from registry.service import Registry


def resource(model: str) -> dict[str, str]:
    return {"prefect.resource.id": f"slm.model.{model}", "prefect.resource.name": model}


def announce(registry: Registry, event: str, model: str, payload: dict[str, object], *, actor: str,
             subject: str | None = None) -> None:
    """Write the audit event, then emit the Prefect event (``slm.*``) that automations listen for."""
    registry.store.append_audit(actor=actor, action=event, subject=subject or model, payload=payload)
    emit_event(event=event, resource=resource(model), payload=payload)

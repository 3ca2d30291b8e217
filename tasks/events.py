"""Prefect custom events and audit records: every outcome is both announced and recorded."""

from __future__ import annotations

from prefect.events import emit_event

from registry.service import Registry


def resource(model: str) -> dict[str, str]:
    return {"prefect.resource.id": f"slm.model.{model}", "prefect.resource.name": model}


def prefect_api() -> str | None:
    """The Prefect server events go to: PREFECT_API_URL, or None for the temporary server of a run without one."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def announce(registry: Registry, event: str, model: str, payload: dict[str, object], *, actor: str,
             subject: str | None = None) -> None:
    """Write the audit event, then emit the Prefect event (``slm.*``) that automations listen for. The audit event
    also records the server the event was sent to (``prefect_api``): the monitor's hand-off check announces a lost
    announcement again only to the server it was meant for."""
    registry.store.append_audit(actor=actor, action=event, subject=subject or model,
                                payload={**payload, "prefect_api": prefect_api()})
    emit_event(event=event, resource=resource(model), payload=payload)

"""Prefect custom events and audit records: every outcome is both announced and recorded."""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect.events import emit_event

from registry.service import Registry


def resource(model: str) -> dict[str, str]:
    return {"prefect.resource.id": f"slm.model.{model}", "prefect.resource.name": model}


def server_has_event(event: str, model: str, since: datetime, **match: object) -> bool:
    """Does the Prefect server hold an ``event`` of ``model`` from ``since`` (less 5 minutes of clock skew) on, whose
    payload has every ``match`` item? Raises when the server cannot be read; the caller decides what that means."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter

    query = EventFilter(occurred=EventOccurredFilter(since=since - timedelta(minutes=5)),
                        event=EventNameFilter(name=[event]), resource=EventResourceFilter(id=[resource(model)[
                            "prefect.resource.id"]]))
    with get_client(sync_client=True) as client:
        page = client.read_events(filter=query, limit=50)  # the server's page size at most
        while True:
            if any(all(e.payload.get(k) == v for k, v in match.items()) for e in page.events):
                return True
            if not page.next_page:
                return False
            page = client.read_events_page(page.next_page)


def prefect_api() -> str | None:
    """The Prefect server events go to: PREFECT_API_URL without any ``user:password@`` (it is written into the
    hash-chained audit log, where nothing can be removed), or None for the temporary server of a run without one."""
    from urllib.parse import urlsplit, urlunsplit

    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return None
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def announce(registry: Registry, event: str, model: str, payload: dict[str, object], *, actor: str,
             subject: str | None = None) -> None:
    """Write the audit event, then emit the Prefect event (``slm.*``) that automations listen for. The audit event
    also records the server the event was sent to (``prefect_api``): the monitor's hand-off check announces a lost
    announcement again only to the server it was meant for."""
    registry.store.append_audit(actor=actor, action=event, subject=subject or model,
                                payload={**payload, "prefect_api": prefect_api()})
    emit_event(event=event, resource=resource(model), payload=payload)

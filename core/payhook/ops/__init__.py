"""Operator tasks over the store: reports, replay, retention and reconcile.

What the status page and `payhook events|failures` show (`event_reports`,
`failure_reports`, `health_reports`), making runs due again
(`replay`), pruning old events (`retention`), and fetching events Stripe sent that never
arrived (`reconcile`).
"""

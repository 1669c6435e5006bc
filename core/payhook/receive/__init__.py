"""Receiving a delivery: `POST /{tenant}` from Stripe to a durable, deduplicated row.

The app and its routes (`app`, `routing`), reading and answering a request (`ingest`), the
`Stripe-Signature` check (`verification`), parsing the event (`envelope`), a tenant's guards
(`guards`), the group-committing writer that stores each event once before the answer
(`writer`), and the runtime that ties the stages together for one app (`runtime`).
"""

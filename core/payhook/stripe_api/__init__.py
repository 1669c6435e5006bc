"""Stripe itself: the event object handlers receive, and the API clients per tenant.

`events` builds `payhook.Event` (a `stripe.Event`) lazily from a payload; `clients` keeps one
`stripe.StripeClient` per tenant; `http` bounds each API call in total; `fetch` coalesces
identical calls and holds them to the tenant's rate.
"""

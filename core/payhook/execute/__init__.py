"""Executing handler runs: claim, run in a transaction with the success mark, retry.

The worker claims due runs (`worker`); the processor runs each handler in its own
transaction, records failures, backs off and gives up (`processing`); each run and delivery
is logged and counted (`observe`).
"""

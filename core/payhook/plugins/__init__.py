"""Plugins: how they are found and enabled, and everything a plugin author is given.

Discovery through the `payhook` entry-point group and per-tenant enabling (`host`), the hook
specifications (`hookspecs`), the handler's context (`context`), `Register` and the handler
types (`types`), per-tenant plugin settings (`settings`), and the package `payhook plugins new`
writes (`scaffold`, `template/`).
"""

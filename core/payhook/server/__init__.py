"""Serving payhook: uvicorn with bounded request heads, and several processes.

uvicorn's options and listening socket (`serving`), its protocols with payhook's bounds on a
request head (`protocols`), and `serve --workers` /
`worker --processes` under a supervisor (`processes`, `supervisor`).
"""

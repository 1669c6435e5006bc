"""The store: events and handler runs, durable on SQLite or PostgreSQL.

The engine and its transactions (`engine`), each database's setup and limits (`sqlite`,
`sqlite_files`, `postgres`), whether it takes writes (`health`), the tables (`models`), the
event log that stores each event once (`eventlog`), the run lifecycle (`runs`), statements
compiled once per dialect (`compiled`), worker wake-ups (`wakeups`) and the migrations.
"""

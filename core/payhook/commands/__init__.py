"""The `payhook` command's groups and commands, one module each; payhook.cli assembles them.

`common` holds what they share: `--config` and its one loader, the store, tables, times.
"""

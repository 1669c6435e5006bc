pytest_plugins = ["payhook.testing"]

"""The shop's tables go where the test's payhook store is (TESTSITE_SHOP_DB)."""

import os
from typing import Any


class ShopOnStoreDatabase:
    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return os.environ.get("TESTSITE_SHOP_DB", "default")

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return os.environ.get("TESTSITE_SHOP_DB", "default")

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return True

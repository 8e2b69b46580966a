"""All tables. Every module in this package is imported here so Base.metadata knows each table
(helpers add hub/models/<concept>.py without touching this file)."""

import importlib
import pkgutil

from hub.models.base import Base
from hub.models.customers import ContactPoint, Customer, CustomerTag
from hub.models.interactions import Interaction, Reminder
from hub.models.users import ApiToken, AuditEntry, User, UserDevice, WebSession

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ApiToken",
    "AuditEntry",
    "Base",
    "ContactPoint",
    "Customer",
    "CustomerTag",
    "Interaction",
    "Reminder",
    "User",
    "UserDevice",
    "WebSession",
]

"""The kiosk service: `create_app(ServiceSettings(...))` is a FastAPI app with the API and the web page."""

from scinsearch.service.app import create_app
from scinsearch.service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]

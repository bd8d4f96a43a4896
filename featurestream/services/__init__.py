"""Local Kafka (KRaft) and Redis for development and tests: reuse, start, stop, report."""

from featurestream.services.manager import SERVICES, services_down, services_status, services_up
from featurestream.services.state import ServiceError, ServiceState

__all__ = ["SERVICES", "ServiceError", "ServiceState", "services_down", "services_status", "services_up"]

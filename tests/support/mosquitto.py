"""Tests use the bench's broker helper (testbed/mosquitto.py); kept here for old imports."""

from testbed.mosquitto import BrokerError, MosquittoBroker, free_port, mosquitto_binary

__all__ = ["BrokerError", "MosquittoBroker", "free_port", "mosquitto_binary"]

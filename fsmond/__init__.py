"""fsmond: file-system events from the kernel, published on D-Bus and MQTT."""

__version__ = "0.1.0"

"""streamproc: streaming drift monitoring for ML models in production, Kafka-native."""

__version__ = "0.1.0"

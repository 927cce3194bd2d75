"""Kafka and Faust: topics, tables, agents, the embedded broker, the client library and CLI."""

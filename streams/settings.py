"""The one place that reads the environment: every knob is a ``STREAMREC_*`` variable.

Examples
--------
>>> s = Settings(platforms="shop,video")
>>> s.platforms
('shop', 'video')
>>> s.event_topic("video")
'events.video'
>>> "secret" in repr(Settings(sasl_password="secret"))
False
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from models.errors import ConfigError
from models.events import CatalogItem, Event, parse_catalog_item, parse_event


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMREC_", frozen=True)

    # --- platforms and topics -------------------------------------------------------------
    platforms: Annotated[tuple[str, ...], NoDecode] = ("shop", "video", "music", "news")
    event_topic_prefix: str = "events."
    catalog_topic: str = "catalog"
    person_topic: str = "person-events"
    recommendations_topic: str = "recommendations"
    dead_letter_topic: str = "dead-letter"
    partitions: int = Field(default=4, ge=1)

    # --- broker ---------------------------------------------------------------------------
    # Needed by `worker`, `produce` and `tail`; `up` and `demo` start the embedded broker.
    bootstrap_servers: str = ""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    ssl_cafile: str = ""

    # --- worker ---------------------------------------------------------------------------
    app_id: str = "streamrec"
    data_dir: Path = Path(".data")
    artifacts_dir: Path = Path("artifacts")
    web_port: int = 6066
    web_bind: str = "127.0.0.1"  # the status page; 0.0.0.0 in a container
    # The embedded broker answers a group join after session_timeout/2: keep it short.
    broker_session_timeout_s: float = 6.0
    # How long a fetch may wait for data. Tansu holds fetches for the full wait (Kafka does
    # not), so this bounds per-hop latency on the embedded broker; raise it on real Kafka.
    consumer_fetch_max_wait_ms: int = Field(default=20, ge=1, le=5000)
    batch_size: int = Field(default=256, ge=1)
    batch_within_s: float = Field(default=0.005, gt=0)
    # How often the worker checks artifacts/ranker/CURRENT for a new version (hot swap).
    model_poll_s: float = Field(default=2.0, gt=0)
    # ONNX Runtime's threads busy-wait between calls: off, they leave the cores to the event
    # loop and the broker (a burst of 3,000 events: ~17 % more events/s, ~40 % less worker
    # CPU; models.artifacts.session_options). On for a machine the worker has to itself.
    onnx_spinning: bool = False

    # --- recommendation -------------------------------------------------------------------
    top_k: int = Field(default=10, ge=1, le=200)
    candidates_per_source: int = Field(default=50, ge=1)
    max_text_chars: int = Field(default=2000, ge=16)
    max_future_skew_s: float = 300.0
    max_past_age_s: float = 10 * 365 * 24 * 3600.0
    # Further models.pipeline.PipelineConfig fields for this deployment, "KEY=VALUE,..." as in
    # `streamrec evaluate --set` (e.g. popularity_half_life_s=21600 where news ages in hours);
    # unknown names and bad values stop the worker at start.
    pipeline: Annotated[tuple[str, ...], NoDecode] = ()

    @field_validator("pipeline", mode="before")
    @classmethod
    def _split_pairs(cls, value: object) -> object:
        return _comma_separated(value)

    @field_validator("platforms", mode="before")
    @classmethod
    def _split_platforms(cls, value: object) -> object:
        value = _comma_separated(value)
        if isinstance(value, (list, tuple)):
            for p in value:
                if not p.replace("_", "").replace("-", "").isalnum():
                    raise ConfigError(f"platform name {p!r} must be alphanumeric (- and _ allowed)")
            if not value:
                raise ConfigError("at least one platform must be configured")
        return value

    def event_topic(self, platform: str) -> str:
        return f"{self.event_topic_prefix}{platform}"

    @property
    def event_topics(self) -> tuple[str, ...]:
        return tuple(self.event_topic(p) for p in self.platforms)

    @property
    def all_topics(self) -> tuple[str, ...]:
        return (
            *self.event_topics,
            self.catalog_topic,
            self.person_topic,
            self.recommendations_topic,
            self.dead_letter_topic,
        )

    # The worker and the client both check input through these two, so an event the client
    # accepts is not dead-lettered for a limit set here.
    def parse_event(self, raw: bytes | None, now: float) -> Event:
        """``raw`` from an events topic, checked against the limits above."""
        return parse_event(
            raw,
            platforms=self.platforms,
            now=now,
            max_text_chars=self.max_text_chars,
            max_future_skew_s=self.max_future_skew_s,
            max_past_age_s=self.max_past_age_s,
        )

    def parse_catalog_item(self, raw: bytes | None) -> CatalogItem:
        """``raw`` from the catalog topic, checked against the limits above."""
        return parse_catalog_item(raw, platforms=self.platforms, max_text_chars=self.max_text_chars)

    def as_env(self) -> dict[str, str]:
        """Every setting as the ``STREAMREC_*`` variable that gives it back (what a worker
        subprocess is started with: it then runs on these settings, all of them, whatever this
        process's own environment says). Secrets included: for a child's environment only,
        never to be logged."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, tuple):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = str(value).lower()
            env[f"STREAMREC_{name.upper()}"] = str(value)
        return env

    def kafka_client_kwargs(self) -> dict[str, object]:
        """Security options in kafka-python / aiokafka spelling; empty for plaintext."""
        kwargs: dict[str, object] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password.get_secret_value(),
            )
        if self.ssl_cafile:
            kwargs["ssl_cafile"] = self.ssl_cafile
        return kwargs


def _comma_separated(value: object) -> object:
    """An environment variable's "a, b,c" as ("a", "b", "c"); anything else as it is."""
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    return value

"""The Faust application. Read top to bottom in the order data flows:

    events.<platform> ──route──▶ person-events ──recommend──▶ recommendations
           │                          ▲    │
           └─ bad input ─▶ dead-letter │    └─ handoff/merge (identity links)
    catalog ──ingest (ONNX encoder)──▶ catalog-embeddings (GlobalTable, every worker)

Agents are thin loops; the logic is in :mod:`models` (``identity.route``, ``Pipeline.handle``).
All topics carry raw bytes: parsing happens in our code, so a bad message becomes a
dead-letter record with its original bytes instead of a crashed agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping, Sequence
from typing import Any, TypeVar, cast

import faust
import faust.streams as faust_streams
import numpy as np
from faust.types import EventT

from models.artifacts import current_version
from models.catalog import Catalog
from models.encoder import TextEncoder
from models.errors import BatchFailedError, InvalidEventError, ModelLoadError, StreamrecError
from models.events import CatalogItem, Event, item_key
from models.identity import route
from models.pipeline import Output, PersonEvent, PersonMessage, Pipeline, PipelineConfig
from models.ranker import RankingHead
from models.sequence import SequenceModel
from models.session import SessionState
from streams.codecs import (
    SessionStore,
    decode_catalog_entry,
    decode_person_message,
    encode_catalog_entry,
    encode_person_message,
)
from streams.settings import Settings
from streams.transport import register as register_transport

M = TypeVar("M")  # a served model

log = logging.getLogger(__name__)

RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}


def bind_event(event: EventT) -> None:
    """Make ``event`` the current one, so table writes go to its partition.

    ``take_events`` fills its buffer in another task, so inside a batch Faust has no current
    event and a table write either fails or lands in the wrong partition. Setting it per
    message keeps each person's state (locally and in the changelog) in that person's
    partition. Faust exposes no public setter; this is the context variable its streams use.
    """
    faust_streams._current_event.set(weakref.ref(event))


def index_if_stored(pipeline: Pipeline, stored: Mapping[str, bytes], event: Event) -> None:
    """Index the event's item if the catalog table ``stored`` has it and the pipeline not yet.

    After a restart the table's entries come back from the worker's local store, not through
    its changelog, and reach the pipeline through ``sync_catalog`` (every 5 s): an event for
    one of them must not be dead-lettered as "unknown item" meanwhile.
    """
    if event.item is None:
        return
    key = item_key(event.platform, event.item)
    if key not in pipeline.catalog and (raw := stored.get(key)) is not None:
        index_entry(pipeline, raw)


def index_entry(pipeline: Pipeline, raw: bytes) -> None:
    """Index one entry of the catalog table. The table's own records: one that cannot be
    indexed is logged and counted, and must not stop the changelog reader, the sync timer or
    an agent (there is no source message to dead-letter)."""
    try:
        pipeline.index_item(*decode_catalog_entry(raw))
    except InvalidEventError as e:
        pipeline.stats["catalog_entries_skipped"] += 1
        log.error("catalog table entry skipped: %s", e.reason)


def add_items_or_report(
    pipeline: Pipeline, items: Sequence[CatalogItem]
) -> list[tuple[np.ndarray | None, str | None]]:
    """Each item's vector, or why it could not be indexed: the batch in one encoder call, and
    if that fails, item by item, so one item the encoder cannot take loses no other."""
    try:
        return [(vector, None) for vector in pipeline.add_items(items)]
    except Exception:
        log.exception("catalog batch of %d failed; indexing item by item", len(items))
    out: list[tuple[np.ndarray | None, str | None]] = []
    for item in items:
        try:
            out.append((pipeline.add_items([item])[0], None))
        except Exception as e:
            out.append((None, f"processing failed: {type(e).__name__}: {e}"))
    return out


def handle_or_retry(
    pipeline: Pipeline,
    batch: Sequence[PersonMessage],
    sessions: MutableMapping[str, SessionState],
    now: float,
) -> Output:
    """The batch in one :meth:`Pipeline.handle`, and if that fails on a bug, message by
    message: a failing message is rejected ("processing failed"), the others are served, and
    what the failed try already learned is not learned again."""
    try:
        return pipeline.handle(batch, sessions, now=now)
    except BatchFailedError as e:
        log.exception("%s; retrying message by message", e)
        learned = e.learned
    out = Output()
    for msg in batch:
        try:
            single = pipeline.handle([msg], sessions, now=now, learned=learned)
        except BatchFailedError as e:
            cause = e.__cause__
            out.rejected.append((msg, f"processing failed: {type(cause).__name__}: {cause}"))
            learned = e.learned
            continue
        out.recommendations += single.recommendations
        out.forwards += single.forwards
        out.rejected += single.rejected
    return out


def event_batches(
    stream: faust.StreamT, max_: int, within: float
) -> AsyncIterator[Sequence[EventT]]:
    # take_events is on the concrete Stream, not on the StreamT interface agents receive.
    return cast(faust.Stream, stream).take_events(max_, within=within)


def load_pipeline(settings: Settings) -> Pipeline:
    config = pipeline_config(settings)  # a bad STREAMREC_PIPELINE fails before models load
    encoder = TextEncoder.from_artifacts(settings.artifacts_dir, spinning=settings.onnx_spinning)
    ranker = load_head(settings, None, encoder.version)
    sequence = None  # optional: the blend does without its signal
    if SequenceModel.available(settings.artifacts_dir):
        try:
            sequence = load_sequence(settings, None, encoder.version)
        except ModelLoadError as e:
            log.error("sequence model not used: %s", e)
    catalog = Catalog(encoder.dim, search_spinning=settings.onnx_spinning)
    return Pipeline(encoder, ranker, config, catalog=catalog, sequence=sequence)


def pipeline_config(settings: Settings) -> PipelineConfig:
    """The worker's pipeline settings: the defaults, the settings' own, then its ``pipeline``
    pairs.

    >>> c = pipeline_config(Settings(top_k=5, pipeline="popularity_half_life_s=3600"))
    >>> c.top_k, c.popularity_half_life_s, c.rerank_in_background
    (5, 3600.0, True)
    >>> pipeline_config(Settings(pipeline="popularity_halflife=1"))
    Traceback (most recent call last):
    ...
    models.errors.ConfigError: unknown pipeline setting 'popularity_halflife' (settings: ...)
    """
    return PipelineConfig(
        top_k=settings.top_k,
        candidates_per_source=settings.candidates_per_source,
        rerank_in_background=True,  # a fit takes seconds: never stall the stream for it
    ).with_overrides(settings.pipeline)


def load_head(settings: Settings, version: str | None, encoder_version: str) -> RankingHead:
    return RankingHead.from_artifacts(
        settings.artifacts_dir, version, spinning=settings.onnx_spinning
    ).check_encoder(encoder_version)


def load_sequence(settings: Settings, version: str | None, encoder_version: str) -> SequenceModel:
    return SequenceModel.from_artifacts(
        settings.artifacts_dir, version, spinning=settings.onnx_spinning
    ).check_encoder(encoder_version)


def build_app(settings: Settings, pipeline: Pipeline | None = None) -> faust.App:
    if not settings.bootstrap_servers:
        raise StreamrecError(
            "STREAMREC_BOOTSTRAP_SERVERS is empty: start a broker (`streamrec up`)"
        )
    pipeline = pipeline or load_pipeline(settings)
    scheme = register_transport(settings.consumer_fetch_max_wait_ms)
    app = faust.App(
        settings.app_id,
        broker=[f"{scheme}://{s}" for s in settings.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.broker_session_timeout_s / 3),
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host="127.0.0.1",
        consumer_auto_offset_reset="earliest",
    )

    # --- topics ----------------------------------------------------------------------------
    topic = {"partitions": settings.partitions, **RAW}
    events = app.topic(*settings.event_topics, **topic)
    catalog = app.topic(settings.catalog_topic, **topic)
    person_events = app.topic(settings.person_topic, **topic)
    recommendations = app.topic(settings.recommendations_topic, **topic)
    dead_letter = app.topic(settings.dead_letter_topic, **topic)

    # --- tables ----------------------------------------------------------------------------
    async def on_catalog_changelog(event: EventT) -> None:
        # Entries written by other workers (and recovered ones) reach the local index here.
        if event.message.value is not None:
            index_entry(pipeline, event.message.value)

    # Faust picks a table's serializer from value_type: bytes → raw (our own codecs).
    raw_values: dict[str, Any] = {"key_type": str, "value_type": bytes}
    catalog_embeddings = app.GlobalTable(
        "catalog-embeddings",
        **raw_values,
        partitions=settings.partitions,
        on_changelog_event=on_catalog_changelog,
    )
    identities = app.Table(
        "identities",
        key_type=str,
        value_type=str,
        partitions=settings.partitions,
    )
    sessions_table = app.Table("sessions", **raw_values, partitions=settings.partitions)
    batch_events: dict[str, EventT] = {}  # person → their message in the batch being handled
    sessions = SessionStore(sessions_table, lambda person: bind_event(batch_events[person]))

    async def to_dead_letter(event: EventT, reason: str) -> None:
        msg = event.message
        log.warning("dead-letter %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason)
        await dead_letter.send(
            key=msg.key,
            value=msg.value,
            headers=[
                ("reason", reason.encode()),
                ("source.topic", msg.topic.encode()),
                ("source.partition", str(msg.partition).encode()),
                ("source.offset", str(msg.offset).encode()),
                ("dead_letter.ts", str(time.time()).encode()),
            ],
        )

    # --- agents ----------------------------------------------------------------------------
    @app.agent(catalog, concurrency=1)
    async def ingest_catalog(stream: faust.StreamT) -> None:
        async for batch in event_batches(stream, 64, within=0.05):
            good = []
            for event in batch:
                try:
                    good.append((event, settings.parse_catalog_item(event.message.value)))
                except InvalidEventError as e:
                    await to_dead_letter(event, e.reason)
            if not good:
                continue
            indexed = add_items_or_report(pipeline, [item for _, item in good])
            for (event, item), (vector, failure) in zip(good, indexed, strict=True):
                if vector is None:
                    await to_dead_letter(event, failure or "not indexed")
                    continue
                bind_event(event)
                catalog_embeddings[item.key] = encode_catalog_entry(item, vector)

    @app.agent(events)
    async def route_events(stream: faust.StreamT) -> None:
        async for event in stream.events():
            try:
                parsed = settings.parse_event(event.message.value, now=time.time())
                expected = settings.event_topic(parsed.platform)
                if event.message.topic != expected:
                    raise InvalidEventError(
                        f"platform {parsed.platform!r} sent to {event.message.topic!r}, "
                        f"expected {expected!r}"
                    )
                if event.message.key != parsed.user.encode():
                    raise InvalidEventError(
                        "message key must be the user id (it partitions the identity table)"
                    )
                index_if_stored(pipeline, catalog_embeddings, parsed)
                pipeline.check_event(parsed)
                routed = route(parsed, identities)
            except InvalidEventError as e:
                await to_dead_letter(event, e.reason)
                continue
            for msg in routed:
                await person_events.send(key=msg.person.encode(), value=encode_person_message(msg))

    @app.agent(person_events)
    async def recommend(stream: faust.StreamT) -> None:
        async for batch in event_batches(
            stream, settings.batch_size, within=settings.batch_within_s
        ):
            for msg in await handle_batch(batch):
                await person_events.send(key=msg.person.encode(), value=encode_person_message(msg))

    async def handle_batch(batch: Sequence[EventT]) -> list[PersonMessage]:
        messages = []
        batch_events.clear()
        for event in batch:
            try:
                messages.append((event, decode_person_message(event.message.value)))
            except InvalidEventError as e:
                await to_dead_letter(event, e.reason)
                continue
            if isinstance(messages[-1][1], PersonEvent):
                index_if_stored(pipeline, catalog_embeddings, messages[-1][1].event)
            batch_events[messages[-1][1].person] = event
        source = {id(msg): event for event, msg in messages}
        out = handle_or_retry(pipeline, [m for _, m in messages], sessions, time.time())
        for rejected, reason in out.rejected:
            await to_dead_letter(source[id(rejected)], reason)
        await publish(out.recommendations)
        return out.forwards

    async def publish(recs: Sequence[Any]) -> None:
        for rec in recs:
            rec.published_ts = time.time()
            await recommendations.send(
                key=rec.person.encode(), value=rec.model_dump_json().encode()
            )

    # --- status for operators, the demo and load tests --------------------------------------
    @app.page("/status")
    async def status(web: Any, request: Any) -> Any:
        reranker = pipeline.reranker
        return web.json(
            {
                "catalog_items": len(pipeline.catalog),
                "model_versions": pipeline.model_versions,
                "stats": pipeline.stats,
                "blend_weights": pipeline.blends.snapshot(),
                "reranker_fits": reranker.fits if reranker else None,
                # background fits that raised or whose process died (the old trees served on)
                "reranker_failed_fits": reranker.failed_fits if reranker else None,
                # what the served fits took in the fitting process (one thread: ~its CPU time)
                "reranker_fit_s": round(reranker.fit_seconds, 2) if reranker else None,
                "platforms": list(settings.platforms),
                # the worker's CPU time so far (without its fitting process: reranker_fit_s)
                "cpu_s": round(time.process_time(), 2),
            }
        )

    async def newly_published(
        name: str, served: str | None, load: Callable[[Settings, str, str], M]
    ) -> M | None:
        """Model ``name`` if a version other than ``served`` was published, loaded off the
        event loop (for the encoder served); None if not, or if it cannot be loaded (logged:
        the old one keeps serving)."""
        try:
            version = current_version(settings.artifacts_dir, name)
            if version == served:
                return None
            return await asyncio.to_thread(load, settings, version, pipeline.encoder.version)
        except ModelLoadError as e:
            log.error("%s not swapped: %s", name, e)
            return None

    @app.timer(interval=settings.model_poll_s)
    async def swap_models() -> None:
        """Serve newly published models without a restart. Assigned between two batches: the
        event loop runs one coroutine at a time. A sequence model is optional: the first one
        published is taken up, and its item vectors are computed on the next batch."""
        old = pipeline.ranker.version if pipeline.ranker else None
        if head := await newly_published("ranker", old, load_head):
            pipeline.ranker = head
            log.warning("ranker swapped: %s -> %s", old, head.version)
        if not SequenceModel.available(settings.artifacts_dir):
            return
        old = pipeline.sequence.version if pipeline.sequence else None
        if sequence := await newly_published("sequence", old, load_sequence):
            pipeline.sequence = sequence
            log.warning("sequence model swapped: %s -> %s", old, sequence.version)

    @app.timer(interval=5.0)
    async def sync_catalog() -> None:
        """Index entries recovered from the local store (not replayed through the changelog)."""
        missing = [k for k in catalog_embeddings if k not in pipeline.catalog]
        for key in missing:
            with contextlib.suppress(KeyError):
                index_entry(pipeline, catalog_embeddings[key])

    return app


def _credentials(settings: Settings) -> Any:
    if settings.security_protocol == "PLAINTEXT":
        return None
    import ssl

    context = ssl.create_default_context(cafile=settings.ssl_cafile or None)
    if settings.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value(),
            mechanism=settings.sasl_mechanism,
            ssl_context=context if settings.security_protocol == "SASL_SSL" else None,
        )
    return faust.SSLCredentials(context)

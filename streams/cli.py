"""``streamrec``: one entry point for operators, app developers and the demo.

streamrec export     export the encoder and train/export the ranking head (needs [export])
streamrec up         start the embedded Kafka broker and create the topics
streamrec worker     run a Faust worker against STREAMREC_BOOTSTRAP_SERVERS
streamrec demo       everything: models, broker, worker, sample events, live recommendations
streamrec produce    send events (JSON lines) to their platform topics
streamrec tail       print recommendations (or the dead-letter topic) as they arrive
streamrec schemas    write the JSON Schemas of every record
streamrec evaluate   replay a dataset through the pipeline and write a quality report
streamrec compare    two evaluation runs target by target, with paired bootstrap intervals
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from models.errors import ConfigError, StreamrecError
from streams.settings import Settings

log = logging.getLogger("streamrec")


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from export.adapt import adapt_to_dataset
    from export.encoder import export_encoder
    from export.ranker import export_ranker
    from export.sequence import export_sequence

    root = args.artifacts or settings.artifacts_dir
    if args.dataset is not None and args.artifacts is None:
        # the worker serves whatever its folder's CURRENT names, and hot-swaps to a new one
        raise ConfigError(
            f"--dataset {args.dataset}: a model trained on a dataset is for evaluating on it; "
            "give it its own folder with --artifacts (e.g. artifacts-"
            f"{args.dataset}), not the one the worker serves from ({root})"
        )
    if args.what in ("all", "encoder") and args.dataset is not None:
        # fine-tuned on the dataset's learn-only positives first (export.adapt)
        with tempfile.TemporaryDirectory() as tuned:
            record = adapt_to_dataset(args.dataset, args.data, args.split, Path(tuned))
            print(f"encoder: {export_encoder(root, adapted=(Path(tuned), record))}")
    elif args.what in ("all", "encoder"):
        print(f"encoder: {export_encoder(root)}")
    if args.what in ("all", "ranker"):
        version = export_ranker(root, dataset=args.dataset, data_dir=args.data, split=args.split)
        print(f"ranker: {version}")
    if args.what == "sequence":  # optional: measured no lift yet, so not in "all" (README)
        version = export_sequence(
            root, dataset=args.dataset, data_dir=args.data, split=args.split
        )
        print(f"sequence: {version}")
    return 0


def ensure_models(settings: Settings) -> None:
    """Export whatever model the worker needs and is not there yet."""
    from models.artifacts import current_version
    from models.errors import ModelLoadError
    from models.ranker import RankingHead

    missing = []
    for name in ("encoder", "ranker"):
        try:
            current_version(settings.artifacts_dir, name)
        except ModelLoadError:
            missing.append(name)
    if "ranker" not in missing:
        try:  # one exported by an older version of this code, or for another encoder, again
            head = RankingHead.from_artifacts(settings.artifacts_dir)
            if "encoder" not in missing:
                head.check_encoder(current_version(settings.artifacts_dir, "encoder"))
        except ModelLoadError as e:
            print(f"ranker: {e}", flush=True)
            missing.append("ranker")
    if not missing:
        return
    print(f"exporting models: {', '.join(missing)} (one time, about a minute) ...", flush=True)
    from export.encoder import export_encoder
    from export.ranker import export_ranker

    if "encoder" in missing:
        export_encoder(settings.artifacts_dir)
    if "ranker" in missing:
        export_ranker(settings.artifacts_dir)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from streams.broker import EmbeddedBroker, ensure_topics

    with EmbeddedBroker(port=args.port) as broker:
        ensure_topics(broker.bootstrap, settings.all_topics, settings.partitions)
        print(f"embedded broker on {broker.bootstrap}; topics: {', '.join(settings.all_topics)}")
        print(
            f"export STREAMREC_BOOTSTRAP_SERVERS={broker.bootstrap}   (Ctrl-C stops it)", flush=True
        )
        _wait_for_signal()
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    from streams.app import build_app
    from streams.broker import discard_stale_state, embedded_incarnation, ensure_topics

    client = settings.kafka_client_kwargs()
    ensure_topics(settings.bootstrap_servers, settings.all_topics, settings.partitions, client)
    discard_stale_state(settings.data_dir, embedded_incarnation(settings.bootstrap_servers, client))
    app = build_app(settings)
    worker = faust.Worker(app, loglevel=args.loglevel, quiet=True)
    worker.execute_from_commandline()
    return 0


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    """Check the whole file first: a bad line is reported with its number, and nothing is sent
    unless ``--skip-invalid`` says to send the others."""
    from models.events import Event
    from streams.client import EventProducer, read_jsonl

    try:
        source = sys.stdin if args.file == "-" else open(args.file)  # noqa: SIM115
    except OSError as e:
        raise ConfigError(f"cannot read {args.file}: {e.strerror}") from e
    with source:
        lines = source.readlines()
    if args.catalog:
        items, errors = read_jsonl(lines, settings.parse_catalog_item)
        events: list[Event] = []
    else:
        now = time.time()
        events, errors = read_jsonl(lines, lambda raw: settings.parse_event(raw, now=now))
        items = []
    what, count = ("items", len(items)) if args.catalog else ("events", len(events))
    for error in errors[:SHOWN_ERRORS]:
        print(error, file=sys.stderr)
    if len(errors) > SHOWN_ERRORS:
        print(f"... and {len(errors) - SHOWN_ERRORS} more invalid lines", file=sys.stderr)
    if errors and not args.skip_invalid:
        print(
            f"{len(errors)} invalid lines: nothing sent (fix them, or pass --skip-invalid to "
            f"send the {count} valid {what})",
            file=sys.stderr,
        )
        return 2
    producer = EventProducer(settings)
    # Sent as checked above: checking each again would parse every line twice, and a
    # timestamp at the age limit could pass the file's check and fail half-way through.
    for item in items:
        producer.send_checked_item(item)
    for event in events:
        producer.send_checked(event)
    producer.close()
    skipped = f"; skipped {len(errors)} invalid lines" if errors else ""
    print(f"sent {count} {what}{skipped}")
    return 0


#: ``streamrec produce`` lists this many invalid lines, then counts the rest.
SHOWN_ERRORS = 20


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from streams.client import RecommendationSubscriber

    topic = settings.dead_letter_topic if args.dead_letter else settings.recommendations_topic
    sub = RecommendationSubscriber(settings, topic=topic, from_beginning=not args.latest)
    try:
        while True:
            for record in sub.records(timeout_s=1.0):
                if args.dead_letter:
                    headers = {k: v.decode() for k, v in record.headers}
                    print(f"{headers.get('reason')}: {record.value[:200]!r}")
                else:
                    print(record.value.decode())
    except KeyboardInterrupt:
        return 0
    finally:
        sub.close()


def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from models.events import json_schemas

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out / f"{name}.schema.json").write_text(json.dumps(schema, indent=2))
        print(out / f"{name}.schema.json")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from streams.demo import run_demo

    ensure_models(settings)
    return run_demo(settings, pace_s=args.pace, limit=args.limit)


def cmd_evaluate(argv: list[str]) -> int:
    from models.evaluation import main as evaluate
    from streams.replay import kafka_replay

    return evaluate(argv, kafka_replay)


def _wait_for_signal() -> None:
    stop = False

    def handler(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handler)
    try:
        while not stop:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streamrec", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="export/train the ONNX models")
    e.add_argument(
        "what", nargs="?", choices=["all", "encoder", "ranker", "sequence"], default="all"
    )
    e.add_argument("--artifacts", type=Path, default=None, help="default: STREAMREC_ARTIFACTS_DIR")
    e.add_argument(
        "--dataset",
        choices=["amazon", "generic"],
        default=None,
        help="train the ranker and the sequence model on a real dataset's train split, and "
        "fine-tune the encoder on it (export.adapt; for evaluation)",
    )
    e.add_argument("--data", type=Path, default=None, help="that dataset's folder")
    e.add_argument("--split", default="valid_F2.txt", help="amazon: the users to leave out")
    u = sub.add_parser("up", help="run the embedded broker")
    u.add_argument("--port", type=int, default=None)
    w = sub.add_parser("worker", help="run a Faust worker")
    w.add_argument("--loglevel", default="warning")
    d = sub.add_parser("demo", help="the end-to-end demo on the embedded broker")
    d.add_argument("--pace", type=float, default=0.02, help="seconds between sample events")
    d.add_argument("--limit", type=int, default=None, help="replay only the first N events")
    pr = sub.add_parser("produce", help="send JSON-lines events (or catalog items)")
    pr.add_argument("file", help="a .jsonl file, or - for stdin")
    pr.add_argument("--catalog", action="store_true", help="the lines are catalog items")
    pr.add_argument(
        "--skip-invalid",
        action="store_true",
        help="send the valid lines even if some are invalid (they are listed either way)",
    )
    t = sub.add_parser("tail", help="print recommendations as they arrive")
    t.add_argument("--dead-letter", action="store_true")
    t.add_argument("--latest", action="store_true", help="only new records")
    s = sub.add_parser("schemas", help="write JSON Schemas")
    s.add_argument("--out", default="schemas")
    sub.add_parser(
        "evaluate", help="replay evaluation (see `streamrec evaluate --help`)", add_help=False
    )
    sub.add_parser(
        "compare",
        help="compare two evaluation runs (see `streamrec compare --help`)",
        add_help=False,
    )
    return p


COMMANDS = {
    "export": cmd_export,
    "up": cmd_up,
    "worker": cmd_worker,
    "demo": cmd_demo,
    "produce": cmd_produce,
    "tail": cmd_tail,
    "schemas": cmd_schemas,
}


#: Commands that talk to a Kafka cluster named by the settings (``up`` and ``demo`` start
#: their own broker).
NEEDS_KAFKA = frozenset({"worker", "produce", "tail"})


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if argv[:1] == ["evaluate"]:
        return cmd_evaluate(argv[1:])
    if argv[:1] == ["compare"]:
        from models.compare import main as compare

        return compare(argv[1:])
    args = parser().parse_args(argv)
    try:
        settings = Settings()
        if args.command in NEEDS_KAFKA and not settings.bootstrap_servers.strip():
            raise ConfigError(
                "STREAMREC_BOOTSTRAP_SERVERS is not set: point it at your Kafka cluster, or run "
                "`streamrec up` and export the address it prints"
            )
        return COMMANDS[args.command](args, settings)
    except StreamrecError as e:
        print(f"streamrec {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

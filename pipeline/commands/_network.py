"""`dbrt run`'s network outputs: --mqtt events, the --restream video and the --serve view (which
shows the others' counters), and their lines in the summary."""
from __future__ import annotations

import sys

MQTT_EMPTY_HELP = (
    "which frames without detections --mqtt publishes: every one (default), or first: a "
    "stream's first, its first after a frame with detections (subscribers learn that the text "
    "went) and its first after a reconnect; the others are skipped and counted "
    "(skipped_empty_total); text events are all published")


def add_mqtt_arguments(group) -> None:
    """--mqtt and the flags that tune it, in `group`."""
    from ._validate import at_least, broker_url

    group.add_argument(
        "--mqtt", type=broker_url, metavar="mqtt[s]://[USER:PASS@]HOST[:PORT]/TOPIC",
        help="publish one JSON event per frame (QoS 1) to this broker and topic, and with "
             "--track each text event; {stream} (the source's index) in TOPIC gives each "
             "stream its own, e.g. dbrt/cam{stream}, the retained online / offline status then "
             "going to the levels before it plus /status (dbrt/status; without {stream}: "
             "TOPIC/status); mqtts://...?ca=FILE trusts the broker certificate that CA (PEM) "
             "signed; the password of a URL without one: the DBRT_MQTT_PASSWORD environment "
             "variable (out of the process list)")
    group.add_argument("--mqtt-queue", type=at_least(1), default=1000,
                       help="events kept while the broker is away; more are dropped and counted "
                            "(while it is connected, a burst waits for acknowledgements instead)")
    group.add_argument("--mqtt-empty", choices=("every", "first"), help=MQTT_EMPTY_HELP)


def check_mqtt_flags(args) -> None:
    """--mqtt-empty needs --mqtt; args.mqtt_password: DBRT_MQTT_PASSWORD for --mqtt's user."""
    from engine.errors import DbrtError

    from ._passwords import mqtt_password

    if args.mqtt_empty and not args.mqtt:
        raise DbrtError("--mqtt-empty applies to --mqtt only; add --mqtt or drop --mqtt-empty")
    args.mqtt_password = mqtt_password(args.mqtt)


def network_sinks(pipe, args, annotators) -> list:
    """--mqtt (per-frame events, and with --track the text events), --restream and --serve
    (the web view also shows the MQTT and restream counters)."""
    sinks = []
    try:
        if args.mqtt:
            from pipeline.mqtt import MqttSink

            sinks.append(MqttSink(args.mqtt, max_queued=args.mqtt_queue,
                                   password=args.mqtt_password, empty=args.mqtt_empty or "every"))
        if args.restream:
            sinks.append(restream_sink(pipe, args, annotators))
        if args.serve:
            serve = _serve_sink(pipe, args, annotators)
            for name, output in outputs_counted(sinks):
                serve.add_output(name, output)
            sinks.append(serve)
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def outputs_counted(sinks) -> list:
    """(name, an object with counters()) of the MQTT sink and of each restreamed stream
    ("restream", or "restream_N" per stream N when several streams are restreamed)."""
    from pipeline.restream import RestreamSink

    named = []
    for sink in sinks:
        if isinstance(sink, RestreamSink):
            several = len(sink.outputs) > 1
            named.extend((f"restream_{stream}" if several else "restream", output)
                         for stream, output in sorted(sink.outputs.items()))
        elif hasattr(sink, "counters"):
            named.append(("mqtt", sink))
    return named


def check_restream(url: str, sources) -> dict:
    """stream -> name of the sources --restream sends, checked before the model loads: one
    URL each, their passwords' variables set, and one source at least that is no image."""
    from engine.errors import DbrtError
    from pipeline.restream import stream_urls

    from ._outputs import stream_names

    names = stream_names(sources)
    if not names:
        raise DbrtError("--restream sends the annotated video of videos, streams and cameras; "
                        "the sources are images")
    stream_urls(url, names)
    return names


def restream_sink(pipe, args, annotators):
    """The annotated video of every video, stream and camera source, live to --restream."""
    from pipeline.restream import RestreamSink

    from ._outputs import stream_names

    names = stream_names(pipe.sources)  # checked before the model loaded (check_restream)
    videos = [s for s in pipe.sources if s.stream in names]
    sink = RestreamSink(args.restream, names, codec=args.video_codec,
                        fps_by_stream={s.stream: s.fps for s in videos if s.fps},
                        live_streams={s.stream for s in videos if s.live}, annotators=annotators)
    for stream, output in sorted(sink.outputs.items()):
        print(f"dbrt run: restreaming stream {stream} to {output.shown}", file=sys.stderr, flush=True)
    return sink


def _serve_sink(pipe, args, annotators):
    from pipeline.serve import ServeSink

    host, port = args.serve
    token = args.serve_token or None  # the flag, else DBRT_SERVE_TOKEN (_check_flag_pairs)
    sink = ServeSink(pipe, host, port, token=token, max_fps=args.serve_fps, annotators=annotators)
    print(f"dbrt run: live view on {sink.url}" + (" (token required)" if token else ""),
          file=sys.stderr, flush=True)
    if not token and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"dbrt run: WARNING: no --serve-token: anyone who can reach {host}:{sink.server.port} "
              "sees the video and the results", file=sys.stderr, flush=True)
    return sink


def print_network_summary(report: dict) -> None:
    """The MQTT and restream lines of the summary; a warning for what did not reach its server."""
    m = report.get("mqtt")
    if m:
        skipped = f", {m['skipped_empty_total']} frames without detections skipped" \
            if m.get("skipped_empty_total") else ""
        print(f"mqtt: {m['acked_total']} events acknowledged, {m['queued']} undelivered, "
              f"{m['dropped_total']} dropped (outbox full), {m['reconnects_total']} reconnects"
              f"{skipped}")
        if m["queued"] and not m["connected"]:
            why = f" ({m['last_error']})" if m.get("last_error") else ""
            print(f"dbrt run: --mqtt: the broker was not connected at the end{why}; "
                  f"{m['queued']} events were not delivered", file=sys.stderr)
        elif m["queued"]:
            print(f"dbrt run: --mqtt: the broker was connected but had not acknowledged "
                  f"{m['queued']} events when the run ended; they may not have been delivered",
                  file=sys.stderr)
    for stream, r in report.get("outputs", {}).get("restream", {}).items():
        print(f"restream {stream} {r['url']}: {r['frames_sent_total']} frames sent, "
              f"{r['frames_dropped_total']} dropped, {r['reconnects_total']} reconnects")
        if r["last_error"] and r["frames_dropped_total"]:
            print(f"dbrt run: --restream {r['url']}: {r['last_error']} (last error); "
                  f"{r['frames_dropped_total']} frames were not sent", file=sys.stderr)

"""Tracking texts across frames: ids that follow moving boxes, the confidence-weighted vote of
the readings, track ends, and the text-events sink (one JSON line per track)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.detections import Detections
from pipeline.reading.tracks import TrackBook
from pipeline.sources import Frame

pytest.importorskip("supervision")


def _frame(index, size=(120, 200), stream=0):
    frame = Frame(np.zeros(size + (3,), np.uint8), index, index / 25, "cam")
    frame.stream = stream
    return frame


def _box(x, y, w=40, h=16):
    return [[x, y], [x + w, y], [x + w, y + h], [x, y + h]]


def _dets(boxes, track_ids=None, texts=None, text_scores=None):
    data = {}
    if track_ids is not None:
        data["track_id"] = np.asarray(track_ids)
    if texts is not None:
        data["text"], data["text_score"] = np.asarray(texts, str), np.asarray(text_scores)
    return Detections.from_quads(np.float32(boxes), np.full(len(boxes), 0.8), data)


def test_the_vote_is_weighted_by_confidence_not_the_last_reading():
    book = TrackBook(lost_frames=3)
    readings = [("EXIT", 0.9), ("EXIT", 0.8), ("FXIT", 0.95), ("EXIT", 0.85), ("EX1T", 0.4)]
    for i, (text, score) in enumerate(readings):
        assert book.update(_frame(i), _dets([_box(10 + i, 10)], [7], [text], [score])) == []
    assert book.reading(0, 7)[0] == "EXIT"
    ended = book.finish()
    assert [t.track_id for t in ended] == [7]
    event = ended[0].to_dict()
    assert event["text"] == "EXIT" and event["confidence"] == pytest.approx((0.9 + 0.8 + 0.85) / 5)
    assert (event["first_frame"], event["last_frame"], event["frames"]) == (0, 4, 5)
    assert event["polygon"] == _box(12, 10)  # the sighting read with the highest confidence


@pytest.mark.parametrize("readings, voted, confidence", [
    # the word cut short by its box in most frames (the lightbox video's MATTER, 303 frames:
    # MATTE won 0.77); the whole word wins with the cut readings' weight
    ([("MATTE", 0.99)] * 10 + [("MATTER", 0.98)] * 4, "MATTER", (9.9 + 3.92) / 14),
    ([("Fre", 1.0)] * 12 + [("Fres", 0.92)] * 3 + [("Fr", 0.9)], "Fres", (12 + 2.76 + 0.9) / 16),
    # not a longer reading read in too few frames or unclearly, nor one that takes in the next
    # word or a symbol
    ([("EXIT", 0.99)] * 10 + [("EXITS", 0.99)] * 2, "EXIT", 9.9 / 12),
    ([("Fre", 1.0)] * 12 + [("Fres", 0.6)] * 4, "Fre", 12 / 16),
    ([("PRIVATE", 0.99)] * 10 + [("PRIVATE SY", 0.99)] * 8, "PRIVATE", 9.9 / 18),
    ([("BLACK", 0.99)] * 10 + [("#BLACK", 0.95)] * 6, "BLACK", 9.9 / 16)])
def test_a_word_cut_short_in_most_frames_is_voted_whole(readings, voted, confidence):
    book = TrackBook(lost_frames=3)
    for i, (text, score) in enumerate(readings):
        book.update(_frame(i), _dets([_box(10, 10)], [7], [text], [score]))
    event = book.finish()[0].to_dict()
    assert event["text"] == voted
    assert event["confidence"] == pytest.approx(confidence, abs=1e-5)


def test_a_track_seen_for_days_keeps_votes_for_a_bounded_number_of_readings():
    """A sign in view day and night is one track; each new misreading added a vote entry for
    ever (memory, and a longer count at every frame). The lightest readings go; the vote and
    its confidence stay those of the winner."""
    from pipeline.reading.tracks import MAX_TEXTS

    book = TrackBook(lost_frames=3)
    for i in range(3 * MAX_TEXTS):
        book.update(_frame(2 * i), _dets([_box(10, 10)], [7], ["OPEN"], [0.9]))
        book.update(_frame(2 * i + 1), _dets([_box(10, 10)], [7], [f"0PEN{i}"], [0.3]))
    track = book.track(0, 7)
    assert len(track.votes) <= MAX_TEXTS and "OPEN" in track.votes
    text, confidence = track.reading
    assert text == "OPEN" and confidence == pytest.approx(0.9 * 3 * MAX_TEXTS / (6 * MAX_TEXTS))


def test_a_track_ends_after_lost_frames_or_when_the_frame_size_changes():
    book = TrackBook(lost_frames=3)
    book.update(_frame(0), _dets([_box(10, 10), _box(100, 50)], [1, 2]))
    assert book.update(_frame(1), _dets([_box(11, 10)], [1])) == []
    assert book.update(_frame(2), _dets([_box(12, 10)], [1])) == []
    # frames 1, 2 and 3 without track 2: it ends
    assert [t.track_id for t in book.update(_frame(3), _dets([_box(13, 10)], [1]))] == [2]
    resized = book.update(_frame(4, size=(240, 400)), _dets([_box(13, 10)], [1]))
    assert [t.track_id for t in resized] == [1]  # the old track 1 ended; a new one began
    assert [t.frames for t in book.finish()] == [1]


def test_bytetrack_keeps_ids_on_moving_texts_and_votes_their_readings():
    from pipeline.reading.tracking import TextTracker

    tracker = TextTracker(lost_frames=5)
    ids, voted = [], []
    for i in range(12):
        boxes = [_box(10 + 3 * i, 10), _box(150 - 2 * i, 80)]
        texts = ["OPEN" if i != 4 else "0PEN", "CAFE"]
        out = tracker(_frame(i), _dets(boxes, texts=texts, text_scores=[0.9, 0.8]))
        ids.append(out.data["track_id"].tolist())
        voted.append(out.data["track_text"].tolist())
    assert len({tuple(row) for row in ids[1:]}) == 1  # the same two ids from the second frame
    first, second = ids[-1]
    assert first != second and first > 0 and second > 0
    assert voted[-1] == ["OPEN", "CAFE"]  # one misreading does not win


def test_the_events_sink_writes_a_start_and_an_end_line_per_track(tmp_path):
    from pipeline.reading.events import TextEventSink

    with TextEventSink(tmp_path / "events.jsonl", lost_frames=2) as sink:
        sink.write(_frame(0), _dets([_box(0, 0), _box(50, 50)], [1, 2], ["A", "B"], [0.9, 0.9]))
        sink.write(_frame(1), _dets([_box(0, 0)], [1], ["A"], [0.9]))
        sink.write(_frame(2), _dets([_box(0, 0)], [1], ["A"], [0.9]))  # track 2 ends here
        assert sink.lines == 3
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e["track_id"], e["text"], e["frames"]) for e in events] == [
        ("start", 1, "A", 1), ("start", 2, "B", 1), ("end", 2, "B", 1), ("end", 1, "A", 3)]
    assert set(events[0]) == {"event", "stream", "source", "track_id", "text", "confidence",
                              "first_timestamp", "last_timestamp", "first_frame", "last_frame",
                              "frames", "readings", "polygon"}


def test_dbrt_run_track_writes_track_ids_and_an_events_file(tmp_path):
    from pipeline.cli import main

    from media import write_video

    clip = write_video(tmp_path / "clip.mp4", frames=6, height=72, width=128)
    out = tmp_path / "out"
    assert main(["run", str(clip), "--track", "--quiet", "--no-video", "--box-thresh", "0.0",
                 "--thresh", "0.0", "--max-side", "128", "--device", "cpu", "--output", str(out)]) == 0
    lines = [json.loads(x) for x in (out / "detections.jsonl").read_text().splitlines()]
    assert all("track_id" in det for line in lines for det in line["detections"])
    report = json.loads((out / "report.json").read_text())
    assert "track" in report["stages"] and report["outputs"]["events"].endswith("events.jsonl")
    assert (out / "events.jsonl").exists()


def test_events_every_n_seconds_of_stream_time_then_one_end_line(tmp_path):
    from pipeline.reading.events import TextEventSink

    path = tmp_path / "events.jsonl"
    with TextEventSink(path, lost_frames=3, every=0.2) as sink:  # frames are 1/25 s apart
        for i in range(12):  # track 1 lives on frames 0..11, reading "A" then "B" more often
            text = "A" if i < 2 else "B"
            boxes, ids, texts = [_box(0, 0)], [1], [text]
            if 2 <= i < 4:  # track 2 lives two frames only: no update, one end line
                boxes, ids, texts = boxes + [_box(60, 60)], ids + [2], texts + ["C"]
            sink.write(_frame(i), _dets(boxes, ids, texts, [0.9] * len(ids)))
        assert sink.updates == 2
    events = [json.loads(line) for line in path.read_text().splitlines()]
    got = [(e["event"], e["track_id"], e["last_frame"], e["text"]) for e in events]
    # updates at 0.2 s and 0.4 s of stream time (frames 5 and 10); track 2 ends at frame 6
    assert got == [("start", 1, 0, "A"), ("start", 2, 2, "C"), ("update", 1, 5, "B"),
                   ("end", 2, 3, "C"), ("update", 1, 10, "B"), ("end", 1, 11, "B")]
    assert set(events[0]) == set(events[-1])  # an update carries the same fields as the end


def test_an_update_is_written_once_after_a_gap_and_never_for_images(tmp_path):
    from pipeline.reading.events import TextEventSink

    path = tmp_path / "events.jsonl"
    with TextEventSink(path, lost_frames=100, every=0.1) as sink:
        sink.write(_frame(0), _dets([_box(0, 0)], [1], ["A"], [0.9]))
        sink.write(_frame(50), _dets([_box(0, 0)], [1], ["A"], [0.9]))  # 2 s later: one line
        image = Frame(np.zeros((120, 200, 3), np.uint8), 0, None, "shot.jpg")
        image.stream = 1
        sink.write(image, _dets([_box(0, 0)], [4], ["B"], [0.9]))
        assert sink.updates == 1
    kinds = [json.loads(line)["event"] for line in path.read_text().splitlines()]
    assert kinds == ["start", "update", "start", "end", "end"]
    with pytest.raises(ValueError, match="every"):
        TextEventSink(tmp_path / "bad.jsonl", every=0)


def test_dbrt_run_events_every_writes_update_lines(tmp_path, capsys):
    from pipeline.cli import main

    out = tmp_path / "out"  # the demo video's first 15 frames (0.6 s) at a small size
    args = ["run", "--events-every", "0.2", "--max-frames", "15", "--max-side", "320", "--quiet",
            "--no-video", "--device", "cpu", "--output", str(out)]
    assert main(args) == 0  # --events-every implies --track
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert {e["event"] for e in events} == {"start", "update", "end"}
    assert all(e["last_frame"] <= 14 for e in events)
    ends = [e["track_id"] for e in events if e["event"] == "end"]
    assert len(ends) == len(set(ends))
    for track in ends:  # the start line is each track's first, the end line its last
        kinds = [e["event"] for e in events if e["track_id"] == track]
        assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("start") == 1
    capsys.readouterr()
    assert main(["run", "--events-every", "0"]) == 2
    assert "argument --events-every: must be a number > 0, got '0'" in capsys.readouterr().err


def test_a_live_source_that_drops_frames_keeps_one_track():
    """Frame indices jump by 12 (a 25 fps camera read at ~2 FPS): "unseen for N frames"
    counts delivered frames, as ByteTrack does, so a short miss does not end the track."""
    book = TrackBook(lost_frames=5)
    ended = []
    for k in range(20):
        seen = k not in (6, 7, 8)
        ended += book.update(_frame(12 * k), _dets([_box(10, 10)] if seen else [],
                                                  [1] if seen else None))
    assert ended == [] and [t.track_id for t in book.finish()] == [1]


def test_ids_are_not_reused_after_a_resolution_change_and_sources_carry_no_credentials():
    from pipeline.reading.tracking import TextTracker

    tracker = TextTracker(lost_frames=5)
    seen = []
    for k in range(12):
        size = (120, 200) if k < 6 else (240, 400)
        frame = _frame(k, size)
        frame.source = "rtsp://user:secret@cam/1"
        out = tracker(frame, _dets([_box(10, 10)]))
        seen += [int(i) for i in out.data["track_id"] if i >= 0]
    first, second = sorted(set(seen))[:1], sorted(set(seen))[1:]
    assert first and second and min(second) > max(first)
    assert all("secret" not in t.source for t in tracker.book.finish())


def test_updates_go_on_after_the_streams_clock_restarts(tmp_path):
    from pipeline.reading.events import TextEventSink

    with TextEventSink(tmp_path / "events.jsonl", lost_frames=100, every=1.0) as sink:
        for k in range(150):
            frame = _frame(k)
            frame.timestamp = (k if k < 100 else k - 100) / 25  # a camera reconnected at 100
            sink.write(frame, _dets([_box(10, 10)], [1]))
    updates = [json.loads(line)["last_frame"] for line in (tmp_path / "events.jsonl").read_text().splitlines()
               if json.loads(line)["event"] == "update"]
    assert any(100 < f < 150 for f in updates)


def test_a_stream_that_fails_for_good_ends_its_tracks_while_the_others_go_on(tmp_path):
    """Its end lines (and MQTT text events) came only when the whole run ended."""
    import threading

    from media import FakeDetector, SimulatedCamera, until
    from pipeline.reading.events import TextEventSink
    from pipeline.runner import Pipeline
    from pipeline.sources import Reconnect

    healthy = SimulatedCamera(total=10**6, fps=100)
    dying = SimulatedCamera(total=10**6, fps=100, fail_at={20}, refuse=99,
                            reconnect=Reconnect(retries=1, delay=0.01))
    pipe = Pipeline([healthy, dying], FakeDetector(), track=True)
    events = TextEventSink(tmp_path / "events.jsonl", lost_frames=10**6)
    pipe.sinks.append(events)
    errors = []
    run = threading.Thread(target=lambda: errors.append(pytest.raises(Exception, pipe.run)))
    run.start()
    try:
        # the sink thread ends the book's tracks, then writes their lines: wait for both
        until(lambda: dying.state == "failed" and not events.book.live(1)
              and '"end"' in (tmp_path / "events.jsonl").read_text(), "stream 1's tracks to end")
        lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
        assert [(x["event"], x["stream"]) for x in lines if x["event"] != "start"] == [("end", 1)]
        assert {x["stream"] for x in lines if x["event"] == "start"} == {0, 1}
        assert healthy.state == "up" and events.book.live(0)
    finally:
        pipe.stop()
        run.join(30)
    assert "gave up" in str(errors[0].value)


def _sighting_events(tmp_path, tracker, gap, sink_lost=None):
    """A word seen for 10 frames, unseen for `gap`, seen for 10 more: the event lines."""
    from pipeline.reading.events import TextEventSink

    path = tmp_path / f"events_{gap}.jsonl"
    sink = TextEventSink(path, lost_frames=sink_lost)
    tracker.lead([sink])
    with sink:
        for i in range(10 + gap + 10):
            seen = i < 10 or i >= 10 + gap
            frame = _frame(i)
            sink.write(frame, tracker(frame, _dets([_box(20, 30)] if seen else [])))
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("lost_frames", [2, 5, 30])
def test_a_track_picked_up_again_never_follows_its_own_end_line(tmp_path, lost_frames):
    """ByteTrack (supervision 0.30) picked a track up one frame after the events sink had ended
    it: two end lines for one track id, the first sighting's lost to a consumer that keeps the
    newest line per id. `lost_frames` unseen frames keep the track; one more ends it."""
    from pipeline.reading.tracking import TextTracker

    kept = _sighting_events(tmp_path, TextTracker(lost_frames=lost_frames), lost_frames)
    assert [(x["event"], x["first_frame"], x["frames"]) for x in kept] == [("start", 0, 1),
                                                                           ("end", 0, 20)]
    split = _sighting_events(tmp_path, TextTracker(lost_frames=lost_frames), lost_frames + 1)
    assert [(x["event"], x["first_frame"], x["frames"]) for x in split] == [
        ("start", 0, 1), ("end", 0, 10),
        ("start", 12 + lost_frames, 1), ("end", 12 + lost_frames, 9)]  # starts on its 2nd frame
    first, second = ([x["track_id"] for x in split[k:k + 2]] for k in (0, 2))
    assert first[0] == first[1] != second[0] == second[1]


def test_the_events_sink_ends_tracks_when_the_pipelines_tracker_does(tmp_path):
    """TextEventSink's own 31 frames ended a track that TextTracker(lost_frames=60) kept:
    update, end, update, end for one track id."""
    from pipeline.reading.tracking import TextTracker

    tracker = TextTracker(lost_frames=60)
    lines = _sighting_events(tmp_path, tracker, 45)
    assert [(x["event"], x["first_frame"], x["frames"]) for x in lines] == [("start", 0, 1),
                                                                            ("end", 0, 20)]
    with pytest.raises(ValueError, match="lost_frames=31.*61 unseen frames"):
        _sighting_events(tmp_path, tracker, 45, sink_lost=31)
    with pytest.raises(ValueError, match="lost_frames must be an integer >= 2"):
        TextTracker(lost_frames=1)
    with pytest.raises(ValueError, match="change_frames must be an integer >= 2, got 1.5"):
        TextTracker(change_frames=1.5)


def test_a_pipeline_hands_its_tracker_to_its_events_sinks(tmp_path):
    from media import FakeDetector
    from pipeline.reading.events import TextEventSink
    from pipeline.reading.tracking import TextTracker
    from pipeline.runner import Pipeline

    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), _frame(0).image)
    events = TextEventSink(tmp_path / "events.jsonl")
    Pipeline([str(tmp_path / "a.png")], FakeDetector(), track=TextTracker(lost_frames=60),
             sinks=[events]).run()
    assert events.book.lost_frames == 61


def test_updates_fall_on_their_grid_without_drifting(tmp_path):
    """0.4 added three times is 1.2000000000000002: the update due at 1.2 s came a frame late."""
    from pipeline.reading.events import TextEventSink

    path = tmp_path / "events.jsonl"
    with TextEventSink(path, lost_frames=100, every=0.4) as sink:
        for i in range(51):  # 25 fps: frame 30 is at 1.2 s
            sink.write(_frame(i), _dets([_box(0, 0)], [1], ["A"], [0.9]))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["last_frame"] for x in lines if x["event"] == "update"] == [10, 20, 30, 40, 50]


def test_a_nan_confidence_counts_as_nothing_and_every_line_is_json(tmp_path):
    """A NaN text_score wrote "confidence":NaN (not JSON), and a track first seen with one had
    no polygon: closing the sink raised, and the end lines not yet written were lost."""
    from pipeline.reading.events import TextEventSink

    path = tmp_path / "events.jsonl"
    with TextEventSink(path, lost_frames=100) as sink:
        sink.write(_frame(0), _dets([_box(0, 0), _box(60, 60)], [1, 2], ["A", "B"],
                                    [float("nan"), 0.9]))
        sink.write(_frame(1), _dets([_box(0, 0), _box(60, 60)], [1, 2], ["A", "B"],
                                    [0.8, float("nan")]))
    lines = [json.loads(x, parse_constant=pytest.fail) for x in path.read_text().splitlines()]
    assert [(x["event"], x["track_id"], x["text"], x["confidence"]) for x in lines] == [
        ("start", 1, "A", 0.0), ("start", 2, "B", 0.9), ("end", 1, "A", 0.4), ("end", 2, "B", 0.45)]
    assert all(x["polygon"] for x in lines)


def test_texts_without_scores_are_tracked_and_numpy_counts_are_taken():
    """Texts from a recognizer of one's own (no text_score) raised IndexError in the track
    book; lost_frames=np.int64(30) was refused."""
    from pipeline.reading.tracking import TextTracker

    tracker = TextTracker(lost_frames=np.int64(30))
    assert tracker.horizon == 31
    dets = Detections.from_quads(np.float32([_box(20, 30)]), [0.9], {"text": np.array(["EXIT"])})
    for i in range(3):
        tracked = tracker(_frame(i), dets)
    assert tracked.data["track_text"].tolist() == ["EXIT"]


def test_a_stream_that_reconnects_ends_its_tracks_and_its_clock_restart_shows_in_no_event(tmp_path):
    """A camera that reconnected (its clock restarting at 0) kept its tracks: their lines said
    last_timestamp < first_timestamp, and text gone during the outage stayed live."""
    from pipeline.reading.events import TextEventSink
    from pipeline.reading.tracking import TextTracker

    tracker, path = TextTracker(), tmp_path / "events.jsonl"
    with TextEventSink(path, every=2.0) as sink:
        tracker.lead([sink])
        for k in range(150):
            frame = _frame(k)
            after = k >= 50  # the second connection: its clock starts again at 0
            frame.timestamp, frame.connection = ((k - 50) / 25, 1) if after else (300 + k / 25, 0)
            sink.write(frame, tracker(frame, _dets([_box(10, 10)])))
    events = [json.loads(line) for line in path.read_text().splitlines()]
    ends = [e for e in events if e["event"] == "end"]
    assert len(ends) == 2 and ends[0]["last_frame"] == 49 and ends[1]["first_frame"] == 50
    assert ends[0]["track_id"] != ends[1]["track_id"]
    assert all(e["last_timestamp"] >= e["first_timestamp"] for e in events)


def test_a_track_unseen_since_its_last_line_gets_no_update(tmp_path):
    """71% of a live run's update lines repeated the track's previous line: tracks fading out,
    unseen until they end, were written again every N seconds."""
    from pipeline.reading.events import TextEventSink

    path = tmp_path / "events.jsonl"
    with TextEventSink(path, lost_frames=60, every=0.4) as sink:  # 10 frames per update
        for i in range(70):  # seen on frames 0..14, then unseen until it ends at frame 74
            sink.write(_frame(i), _dets([_box(0, 0)] if i < 15 else [], [1] if i < 15 else []))
    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["event"], e["last_frame"]) for e in events] == [("start", 0), ("update", 10),
                                                                ("update", 14), ("end", 14)]


def test_a_lone_streams_tracks_end_as_its_outage_begins_not_when_it_comes_back(tmp_path):
    """With no frames coming, nothing ended the tracks of a camera that went away: its end
    lines (and MQTT text events) waited for its return, possibly hours."""
    import threading

    from media import FakeDetector, SimulatedCamera, until
    from pipeline.reading.events import TextEventSink
    from pipeline.runner import Pipeline
    from pipeline.sources import Reconnect

    back = threading.Event()

    class Away(SimulatedCamera):
        def _connect(self):
            if self.connects:
                back.wait(30)  # the camera answers again only when the test says so
            super()._connect()

    camera = Away(total=10**6, fps=100, fail_at={20}, reconnect=Reconnect(retries=None, delay=0.01))
    pipe = Pipeline([camera], FakeDetector(), track=True)
    events = TextEventSink(tmp_path / "events.jsonl", lost_frames=10**6)
    pipe.sinks.append(events)
    run = threading.Thread(target=pipe.run)
    run.start()
    try:
        until(lambda: camera.state == "reconnecting" and not events.book.live(0),
              "the lost stream's tracks to end")
        lines = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
        assert [x["event"] for x in lines] == ["start", "end"] and lines[1]["last_frame"] == 18
        back.set()
        until(lambda: events.book.live(0), "a track on the new connection")
        assert events.book.live(0)[0].track_id != lines[0]["track_id"]
    finally:
        back.set()
        pipe.stop()
        run.join(30)


def test_a_track_bytetrack_picks_up_after_its_end_gets_a_new_id(tmp_path):
    """supervision's ByteTrack kept a removed track in its pool and matched it again a frame
    later: its id came back after its end line (1 in 2,500 tracks of a 10-minute run)."""
    from pipeline.reading.events import TextEventSink
    from pipeline.reading.tracking import TextTracker

    tracker = TextTracker(lost_frames=5)
    sv = tracker.sv
    script = {k: 7 for k in range(5)} | {12: 7, 13: 7}  # frames 5..11 unseen: ended at 11

    class Scripted:
        frame = -1

        def update_with_detections(self, boxes):
            Scripted.frame += 1
            if Scripted.frame not in script:
                return boxes[[]]
            boxes.tracker_id = np.asarray([script[Scripted.frame]])
            return boxes

    tracker.sv = type("sv", (), {"Detections": sv.Detections, "ByteTrack": lambda **kw: Scripted()})
    path = tmp_path / "events.jsonl"
    with TextEventSink(path) as sink:
        tracker.lead([sink])
        for k in range(14):
            sink.write(_frame(k), tracker(_frame(k), _dets([_box(10, 10)])))
    ends = [json.loads(x) for x in path.read_text().splitlines() if '"end"' in x]
    assert [(e["track_id"], e["first_frame"], e["last_frame"]) for e in ends] == [(1, 0, 4), (2, 12, 13)]


def test_an_event_line_writes_times_and_polygons_as_the_result_line_of_its_frame(tmp_path):
    """A consumer joins events.jsonl to detections.jsonl on (stream, frame, timestamp): both
    write a frame's facts through one serializer, so they agree to the digit, and a timestamp
    that is not a number is null in both (NaN is not JSON)."""
    from pipeline.detections import FrameResult
    from pipeline.reading.events import TextEventSink

    frames = [_frame(0), _frame(1)]
    frames[0].timestamp, frames[1].timestamp = 1 / 3, float("nan")
    dets = Detections.from_quads(np.float32([[[10.005, 3.333333], [50.125, 3.3], [50, 19.9],
                                             [10, 19.9]]]), [0.876543219], {"track_id": [1]})
    sink = TextEventSink(tmp_path / "events.jsonl")
    lines = [json.loads(FrameResult(f, dets).to_json()) for f in frames]
    for frame in frames:
        sink.write(frame, dets)
    sink.close()
    start, event = [json.loads(line, parse_constant=pytest.fail)
                    for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert start["first_timestamp"] == start["last_timestamp"] == lines[0]["timestamp"]
    assert event["first_timestamp"] == lines[0]["timestamp"] == round(1 / 3, 6)
    assert event["last_timestamp"] is None and lines[1]["timestamp"] is None
    assert event["polygon"] == lines[0]["detections"][0]["polygon"]


def test_a_track_without_a_reading_is_null_in_the_result_lines_events_and_mqtt(tmp_path):
    """A track not read yet was `"text": null, "confidence": 0.0` in its events but
    `"track_text": "", "track_text_score": 0.0` in the result lines: now null and null in both
    (no text, no confidence), and the event's text / confidence are its last line's."""
    from pipeline.detections import FrameResult
    from pipeline.mqtt import event, text_event
    from pipeline.reading.events import TextEventSink
    from pipeline.reading.tracking import TextTracker

    tracker, published = TextTracker(lost_frames=5), []
    sink = TextEventSink(tmp_path / "events.jsonl", listeners=[published.append])
    sink.follow(tracker)
    for i in range(4):  # the left box is never read, the right one always
        frame = _frame(i)
        out = tracker(frame, _dets([_box(10, 10), _box(120, 60)], texts=["", "EXIT"],
                                   text_scores=[0.0, 0.9]))
        sink.write(frame, out)
        line = json.loads(FrameResult(frame, out).to_json(), parse_constant=pytest.fail)
    sink.close()
    assert out.data["track_text"].tolist() == [None, "EXIT"]
    unread, read = line["detections"]
    assert (unread["track_text"], unread["track_text_score"]) == (None, None)
    assert (read["track_text"], read["track_text_score"]) == ("EXIT", 0.9)
    assert out.to_records()[0]["track_text"] is None  # the Python API's records say so too
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    ends = {e["track_id"]: e for e in map(json.loads, lines)}
    for det in (unread, read):
        assert (ends[det["track_id"]]["text"], ends[det["track_id"]]["confidence"]) == (
            det["track_text"], det["track_text_score"])
    mqtt_line = json.loads(event(frame, out, "cam"), parse_constant=pytest.fail)
    assert mqtt_line["detections"] == line["detections"]
    mqtt_ends = [text_event(e) for e in published]
    assert [(e["text"], e["confidence"]) for e in mqtt_ends
            if e["track_id"] == unread["track_id"]] == [(None, None)] * 2  # start, end


@pytest.mark.parametrize("kwargs, error, said", [
    (dict(every="2"), ValueError, "every= must be a number of seconds > 0"),
    (dict(every=True), ValueError, "every= must be a number of seconds > 0"),
    (dict(lost_frames="3"), ValueError, "lost_frames= must be a number of frames >= 1"),
    (dict(lost_frames=2.5), ValueError, "lost_frames= must be a number of frames >= 1"),
    (dict(lost_frames=0), ValueError, "lost_frames= must be a number of frames >= 1"),
    (dict(listeners=print), TypeError, "listeners= takes a list of functions"),
    (dict(listeners=[5]), TypeError, "listeners= takes a list of functions"),
    (dict(listeners=5), TypeError, "listeners= takes a list of functions"),
])
def test_a_text_event_sinks_wrong_arguments_are_refused_when_made(tmp_path, kwargs, error, said):
    """every='2' was Python's TypeError about '>'; every=True was 1 s; lost_frames='3' or 2.5
    and a listener that is no function were taken, failing at the run's start or first line
    in the pipeline's threads."""
    from pipeline.reading.events import TextEventSink

    with pytest.raises(error, match=rf"^TextEventSink {said}"):
        TextEventSink(tmp_path / "events.jsonl", **kwargs)
    listened = TextEventSink(tmp_path / "events.jsonl", listeners=(f for f in [print]))
    assert listened.listeners == [print]  # a generator is taken whole
    listened.close()


def _read_at_one_place(tmp_path, readings, **tracker_args):
    """One box read as `readings[i]` in frame i (None: not seen), through a tracker (a default
    one, or one of `tracker_args`) and an events sink: the frames' track ids and event lines."""
    from pipeline.reading.events import TextEventSink
    from pipeline.reading.tracking import TextTracker

    tracker, path = TextTracker(**tracker_args), tmp_path / "events.jsonl"
    sink = TextEventSink(path)
    tracker.lead([sink])
    ids = []
    with sink:
        for i, text in enumerate(readings):
            seen = text is not None
            frame = _frame(i)
            out = tracker(frame, _dets([_box(20, 30, w=80, h=24)] if seen else [],
                                       texts=[text] if seen else None,
                                       text_scores=[0.95] if seen else None))
            sink.write(frame, out)
            ids.append(int(out.data["track_id"][0]) if seen else None)
    return ids, [json.loads(x) for x in path.read_text().splitlines()]


def test_a_new_text_where_a_lost_track_was_gets_its_own_track(tmp_path):
    """A caption (SIMPLE) gone after a cut, the next one (Fast) shown where it was 25 frames
    later: ByteTrack picked the lost track up on it, so SIMPLE's end line ran to Fast's last
    frame, and Fast got no line of its own (on the street captions video)."""
    ids, lines = _read_at_one_place(tmp_path, ["SIMPLE"] * 12 + [None] * 25 + ["Fast"] * 12)
    assert len(set(ids[1:12])) == 1 and len(set(ids[37:])) == 1 and ids[37] != ids[11]
    got = [(x["event"], x["text"], x["first_frame"], x["last_frame"], x["frames"]) for x in lines]
    assert got == [("start", "SIMPLE", 0, 0, 1), ("start", "Fast", 37, 37, 1),
                   ("end", "SIMPLE", 0, 11, 12), ("end", "Fast", 37, 48, 12)]  # SIMPLE's at 42
    assert lines[2]["confidence"] == pytest.approx(0.95)


def test_a_misreading_or_a_part_of_the_word_keeps_the_track(tmp_path):
    """`#` read `井` in some frames (the lightbox video): in a frame straight after a sighting,
    or after frames unseen when the track read it before; a part of the word after a gap (the
    box cut it)."""
    for readings, voted in [(["#"] * 6 + ["井"] + ["#"] * 3 + [None] * 3 + ["井"] + ["#"] * 4,
                             "#"),
                            (["BLACK"] * 6 + [None] * 3 + ["ACK"] + ["BLACK"] * 3 + [None] * 2
                             + ["BL"], "BLACK")]:
        ids, lines = _read_at_one_place(tmp_path, readings)
        assert len({i for i in ids[1:] if i is not None}) == 1
        assert [(x["text"], x["frames"]) for x in lines] == [(readings[0], 1),
                                                             (voted, len(ids) - ids.count(None))]


def _heard(tmp_path, frames, tracker=None, **kwargs):
    """Each (frame, detections) written to a TextEventSink (through `tracker` when given), a
    listener noting the frame being written as each line comes: [(frame index, line)]."""
    from pipeline.reading.events import TextEventSink

    heard, now = [], [None]
    sink = TextEventSink(tmp_path / "events.jsonl",
                         listeners=[lambda e: heard.append((now[0], e))], **kwargs)
    if tracker is not None:
        tracker.lead([sink])
    with sink:
        for frame, dets in frames:
            now[0] = frame.index
            sink.write(frame, dets if tracker is None else tracker(frame, dets))
    written = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [line for _, line in heard] == written
    return heard


def test_a_start_line_comes_first_once_on_the_frame_its_track_is_first_reported(tmp_path):
    """A consumer heard of a text only at its first update (--events-every seconds after it
    appeared) or at its end (30+ frames after it was last seen). ByteTrack confirms a track
    shown mid-run on its second sighting: the start line comes on that frame, with that
    frame's reading (which later lines refine) and the other lines' fields."""
    from pipeline.reading.tracking import TextTracker

    def frame_and_dets(i):  # EXIT from the start; a plate from frame 5 on, misread at first
        boxes, texts = [_box(10, 10)], ["EXIT"]
        if i >= 5:
            boxes, texts = boxes + [_box(100, 60)], texts + ["B4 XYZ" if i == 6 else "B4 XYS"]
        return _frame(i), _dets(boxes, texts=texts, text_scores=[0.9] * len(texts))

    heard = _heard(tmp_path, map(frame_and_dets, range(40)), TextTracker(lost_frames=5), every=0.4)
    lines = [line for _, line in heard]
    assert [(at, e["event"], e["track_id"]) for at, e in heard if e["event"] == "start"] == [
        (0, "start", 1), (6, "start", 2)]  # the plate's first sighting (5) had no track id yet
    for track in (1, 2):
        kinds = [e["event"] for e in lines if e["track_id"] == track]
        assert kinds[0] == "start" and kinds.count("start") == 1 and kinds[-1] == "end"
    start = next(e for e in lines if e["event"] == "start" and e["track_id"] == 2)
    assert {k: start[k] for k in ("text", "first_frame", "last_frame", "frames", "readings")} == {
        "text": "B4 XYZ", "first_frame": 6, "last_frame": 6, "frames": 1, "readings": 1}
    assert start["confidence"] == pytest.approx(0.9) and start["polygon"] == _box(100, 60)
    assert start["first_timestamp"] == start["last_timestamp"] == 0.24
    assert set(start) == set(lines[-1])  # the same fields as the update and end lines
    assert next(e for e in reversed(lines) if e["track_id"] == 2)["text"] == "B4 XYS"


def test_start_lines_of_several_streams_and_of_a_stream_that_reconnects(tmp_path):
    """Tracks of two streams, frames interleaved, stream 1 reconnecting at its frame 20 (its
    tracks end; the text seen again is a new track): every track's start line is its first,
    once, written with the frame that first reports its id, and carries that frame's facts."""
    frames = []
    for i in range(40):
        ids0 = [1] + ([2] if 10 <= i < 25 else [])
        frames.append((_frame(i, stream=0), _dets([_box(0, 0), _box(60, 60)][:len(ids0)], ids0,
                                                   ["A", "B"][:len(ids0)], [0.9] * len(ids0))))
        one = _frame(i, stream=1)
        one.connection = int(i >= 20)
        track = 7 if i < 20 else 8  # the tracker's new id on the new connection
        if i >= 3:  # seen from frame 3 on
            frames.append((one, _dets([_box(30, 30)], [track], ["C"], [0.8])))
    heard = _heard(tmp_path, frames, lost_frames=100)
    starts = [(at, e["stream"], e["track_id"]) for at, e in heard if e["event"] == "start"]
    assert starts == [(0, 0, 1), (3, 1, 7), (10, 0, 2), (20, 1, 8)]
    for at, e in heard:
        if e["event"] == "start":
            assert (e["first_frame"], e["last_frame"], e["frames"]) == (at, at, 1)
    kinds = {}
    for _, e in heard:
        kinds.setdefault((e["stream"], e["track_id"]), []).append(e["event"])
    assert kinds == {(0, 1): ["start", "end"], (1, 7): ["start", "end"],
                     (0, 2): ["start", "end"], (1, 8): ["start", "end"]}
    ended_7 = next(at for at, e in heard if e["event"] == "end" and e["track_id"] == 7)
    assert ended_7 == 20  # the reconnect ends 7 on the frame that starts 8
    # a frame's start lines come before its update and end lines
    assert [e["track_id"] for at, e in heard if at == 20 and e["stream"] == 1] == [8, 7]


def test_a_new_text_shown_in_place_of_the_last_without_a_gap_gets_its_own_track(tmp_path):
    """The next caption shown where the last one was on the very next frame: ByteTrack keeps
    the box's track, so the first caption's vote mixed both texts and no end / start lines
    told of the change. Its readings unlike the vote for 3 frames in a row, alike, start a
    new track that takes those frames (the old one's end line covers its own text only)."""
    from pipeline.reading.tracking import TextTracker

    for change_frames in (3, 5):  # the events sink holds readings back as the tracker does
        ids, lines = _read_at_one_place(tmp_path, ["SIMPLE"] * 12 + ["Fast"] * 12,
                                        change_frames=change_frames)
        split = 12 + change_frames - 1
        assert len(set(ids[1:split])) == 1 and len(set(ids[split:])) == 1
        assert ids[split] != ids[split - 1]
        got = [(x["event"], x["text"], x["first_frame"], x["last_frame"], x["frames"])
               for x in lines]
        assert got == [("start", "SIMPLE", 0, 0, 1), ("start", "Fast", 12, split, change_frames),
                       ("end", "SIMPLE", 0, 11, 12), ("end", "Fast", 12, 23, 12)]
        assert lines[2]["confidence"] == pytest.approx(0.95)
    tracker = TextTracker()  # the frame that splits the track says which it split from
    said = [tracker(_frame(i), _dets([_box(20, 30, w=80, h=24)], texts=[text],
                                     text_scores=[0.9])).data["track_split_from"].tolist()
            for i, text in enumerate(["SIMPLE"] * 5 + ["Fast"] * 4)]
    assert said == [[-1]] * 7 + [[1], [-1]]


def test_a_misreading_for_a_frame_or_two_or_readings_unlike_each_other_keep_the_track(tmp_path):
    """Readings unlike the vote for fewer frames than a change takes, or unlike each other
    (a blurred word read as garbage), or on a track read too few times to have a text yet,
    are the track's misreadings: one id, one end line with every frame."""
    for readings, voted in [(["#"] * 6 + ["井"] * 2 + ["#"] * 4, "#"),
                            (["DANGER"] * 8 + ["kn", "ZQ", "xy", "UF", "DANGER"], "DANGER"),
                            (["kn"] * 2 + ["NEWS"] * 10, "NEWS"),
                            (["EXIT"] * 6 + ["井", None, "井", "EXIT"], "EXIT")]:
        ids, lines = _read_at_one_place(tmp_path, readings)
        assert len({i for i in ids[1:] if i is not None}) == 1, readings
        assert [(x["text"], x["frames"], x["last_frame"]) for x in lines] == [
            (readings[0], 1, 0), (voted, len(ids) - ids.count(None), len(ids) - 1)], readings


def test_the_events_sink_alone_counts_every_sighting_of_a_track(tmp_path):
    """Without the pipeline's tracker, a track's readings held back as unlike its vote are
    counted a few frames later, or at its end."""
    from pipeline.reading.events import TextEventSink

    texts = ["A"] * 5 + ["B"] * 7 + ["C", "C"]
    path = tmp_path / "events.jsonl"
    with TextEventSink(path, lost_frames=3) as sink:
        for i, text in enumerate(texts):
            sink.write(_frame(i), _dets([_box(0, 0)], [1], [text], [0.9]))
    end = json.loads(path.read_text().splitlines()[-1])
    assert (end["text"], end["frames"], end["readings"], end["last_frame"]) == ("B", 14, 14, 13)



def _read_boxes(tmp_path, frames, tracker=None):
    """Each frame's [(box, reading)] through a tracker (a default one unless given) and an
    events sink: each frame's track ids, and the event lines as (event, track id, text, first
    frame, last frame, frames)."""
    from pipeline.reading.events import TextEventSink
    from pipeline.reading.tracking import TextTracker

    tracker, path, ids = tracker or TextTracker(), tmp_path / "events.jsonl", []
    with TextEventSink(path) as sink:
        tracker.lead([sink])
        for i, seen in enumerate(frames):
            frame = _frame(i, size=(240, 400))
            out = tracker(frame, _dets([b for b, _ in seen], texts=[t for _, t in seen],
                                       text_scores=[0.95] * len(seen)))
            sink.write(frame, out)
            ids.append(out.data["track_id"].tolist())
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    return ids, [(x["event"], x["track_id"], x["text"], x["first_frame"], x["last_frame"],
                  x["frames"]) for x in lines]


def _caption(text, boxes):
    """One text in each of `boxes` (None: not seen), a frame each."""
    return [[] if b is None else [(b, text)] for b in boxes]


@pytest.mark.parametrize("boxes", [
    # zooming in: from 80 x 24 to 180 x 54 about the same centre in one frame
    [_box(160, 100, 80, 24)] * 8 + [_box(110, 85, 180, 54)] * 8,
    # moving fast: a box's width to the right in one frame, on for 8 more
    [_box(100 + 4 * i, 100, 80, 24) for i in range(8)]
    + [_box(215 + 4 * i, 104, 80, 24) for i in range(8)],
    # unseen 3 frames, then back a little larger, a little lower
    [_box(160, 100, 80, 24)] * 8 + [None] * 3 + [_box(140, 115, 120, 36)] * 8,
])
def test_a_text_whose_box_jumps_keeps_its_track(tmp_path, boxes):
    """ByteTrack matches boxes only: a caption zooming or moving fast (the street captions
    video's `Fast`) lost its track and started another while the first was kept as lost, one
    text under two ids with two start / end pairs. The new track reads like the lost one and
    its box is near the last one: it continues it. Its first sighting has no id yet (ByteTrack
    confirms a track on its 2nd)."""
    readings = _caption("Fast", boxes)
    first = len(boxes) - 8
    readings[first] = [(boxes[first], "ast")]  # a letter cut off
    ids, lines = _read_boxes(tmp_path, readings)
    seen = [row for row in ids if row]
    assert {i for row in seen for i in row} == {-1, 1} and seen[0] == [1]
    assert [i for row in seen for i in row].count(-1) == 1
    assert lines == [("start", 1, "Fast", 0, 0, 1),
                     ("end", 1, "Fast", 0, len(boxes) - 1, len(seen) - 1)]


def test_a_new_track_continues_no_text_seen_with_it_far_unlike_long_lost_or_of_before(tmp_path):
    """A new track continues a lost one only reading alike near its last box a few frames
    after it was last seen, within one connection at one frame size: two words seen in one
    frame (a split, the new one's unconfirmed first sighting, or two new ones), a sign far
    away, another text (`Love` after `Open` at a cut on the demo video: two letters of four
    alike), a text back after more than `reid_frames` unseen frames, or one seen again after
    a reconnect or at another frame size are tracks of their own."""
    from pipeline.reading.events import TextEventSink
    from pipeline.reading.tracking import TextTracker

    here, jumped, far = _box(160, 100, 80, 24), _box(110, 85, 180, 54), _box(10, 200, 80, 24)
    cases = [(_caption("BLACK", [here] * 9) + _caption("BLACK", [jumped] * 6), {}),
             (_caption("EXIT", [here] * 8 + [far] * 6), {}),
             (_caption("Open", [here] * 8) + _caption("Love", [jumped] * 6), {}),
             (_caption("Fast", [here] * 8 + [None] * 3 + [jumped] * 6), {"reid_frames": 2})]
    cases[0][0][8].append((jumped, "BL"))  # BL first seen with BLACK
    # two boxes reading alike near a lost track: one continues it
    cases.append((_caption("EXIT", [here] * 8 + [None] * 2 + [jumped] * 6), {}))
    for seen in cases[-1][0][10:]:
        seen.append((_box(160, 130, 80, 24), "EXIT"))
    for readings, tracker_args in cases:
        ids, lines = _read_boxes(tmp_path, readings, TextTracker(**tracker_args))
        assert [x[:2] for x in lines] == [("start", 1), ("start", 2), ("end", 1), ("end", 2)], \
            readings
    assert _read_boxes(tmp_path, cases[3][0], TextTracker(reid_frames=3))[1] == [
        ("start", 1, "Fast", 0, 0, 1), ("end", 1, "Fast", 0, 16, 13)]
    for change in ("size", "connection"):
        tracker, path = TextTracker(), tmp_path / "events.jsonl"
        with TextEventSink(path) as sink:
            tracker.lead([sink])
            for i, box in enumerate([here] * 6 + [None] * 2 + [jumped] * 6):
                frame = _frame(i, size=(240, 400) if i < 8 or change != "size" else (480, 800))
                frame.connection = int(i >= 8 and change == "connection")
                seen = [] if box is None else [box]
                sink.write(frame, tracker(frame, _dets(seen, texts=["Fast"] * len(seen),
                                                       text_scores=[0.9] * len(seen))))
        assert [(x["event"], x["track_id"]) for x in map(json.loads, path.read_text().splitlines())
                ] == [("start", 1), ("start", 2), ("end", 1), ("end", 2)]


def test_a_track_continued_by_another_is_picked_up_again_under_its_id(tmp_path):
    """The street captions video's `Fast`: ByteTrack lost its track (77-80) and started
    another (81-90), then picked the first up again (91-105) and let the second go. The
    second continued the first's id; the first, picked up again, keeps it too, but never
    beside the second in one frame: one id per detection of a frame."""
    from pipeline.reading.events import TextEventSink
    from pipeline.reading.tracking import TextTracker

    tracker = TextTracker(lost_frames=5)
    sv = tracker.sv
    # ByteTrack's ids per frame: 8 is first seen at frame 5 (reported from its 2nd sighting)
    script = [[7]] * 5 + [[]] + [[8]] * 4 + [[7]] * 4 + [[7, 8]] * 2

    class Scripted:
        frame = -1

        def update_with_detections(self, boxes):
            Scripted.frame += 1
            picked = boxes[list(range(len(script[Scripted.frame])))]
            picked.tracker_id = np.asarray(script[Scripted.frame], int)
            return picked

    tracker.sv = type("sv", (), {"Detections": sv.Detections, "ByteTrack": lambda **kw: Scripted()})
    path, ids = tmp_path / "events.jsonl", []
    with TextEventSink(path) as sink:
        tracker.lead([sink])
        for k, bytetrack_ids in enumerate(script):
            boxes = [_box(10 + 5 * k, 10), _box(10 + 5 * k, 40)][:max(len(bytetrack_ids), 1)]
            out = tracker(_frame(k), _dets(boxes, texts=["Fast"] * len(boxes),
                                          text_scores=[0.9] * len(boxes)))
            sink.write(_frame(k), out)
            ids.append([i for i in out.data["track_id"].tolist() if i >= 0])
    assert ids == [[1]] * 5 + [[]] + [[1]] * 8 + [[1, 2]] * 2
    ends = [json.loads(x) for x in path.read_text().splitlines() if '"end"' in x]
    assert [(e["track_id"], e["first_frame"], e["last_frame"], e["frames"]) for e in ends] == [
        (1, 0, 15, 15), (2, 14, 15, 2)]

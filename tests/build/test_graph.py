"""Stages as a graph: independent stages build at the same time, a `COPY --from` waits only for the
stage it names, and every line stays attributable to its step (Ketch's vertex messages, the stage's
name before each line of the classic stream when stages run at once)."""

from __future__ import annotations

from tests.build.conftest import api_build, built_id, stream_text, write_tree

# /proc/uptime is the host's clock in every container, to a hundredth of a second
STAMP = "cut -d' ' -f1 /proc/uptime"

GRAPH = f"""\
FROM busybox AS slow
RUN {STAMP} > /start && sleep 2 && {STAMP} > /end
FROM busybox AS quick
RUN {STAMP} > /start && sleep 1 && {STAMP} > /end
FROM busybox
COPY --from=quick /start /end /quick/
RUN {STAMP} > /after-quick
COPY --from=slow /start /end /slow/
"""


def test_independent_stages_overlap_and_copy_from_waits_for_its_stage_only(ketchd, ketch, tmp_path):
    write_tree(tmp_path, {"Dockerfile": GRAPH})
    status, msgs = api_build(ketchd, tmp_path, t="graph:1", nocache=1)
    assert status == 200, msgs
    built_id(msgs)
    out = ketch("run", "--rm", "graph:1", "cat", "/slow/start", "/slow/end", "/quick/start", "/quick/end",
                "/after-quick").stdout.split()
    slow_start, slow_end, quick_start, quick_end, after_quick = map(float, out)
    # both RUNs ran at once: each started before the other ended
    assert slow_start < quick_end and quick_start < slow_end, out
    # the final stage copied from quick and ran its RUN while slow was still sleeping
    assert after_quick < slow_end, out
    # the classic stream names the stage before each of its lines; the vertices say which step is which
    text = stream_text(msgs)
    assert "[slow] Step " in text and "[quick] Step " in text
    starts = {m["aux"]["ketch"]["vertex"]: m["aux"]["ketch"]["name"] for m in msgs
              if "ketch" in m.get("aux", {}) and m["aux"]["ketch"]["event"] == "start"}
    assert f"[slow 2/2] RUN {STAMP} > /start && sleep 2 && {STAMP} > /end" in starts.values()
    assert "[stage-2 2/4] COPY --from=quick /start /end /quick/" in starts.values()
    done = [m["aux"]["ketch"] for m in msgs if m.get("aux", {}).get("ketch", {}).get("event") == "done"]
    assert len(done) == len(starts) == 2 + 2 + 4
    for m in msgs:   # every line of a step carries its vertex, and the aux ID comes after every vertex
        if "stream" in m and m["stream"].startswith("["):
            assert m["vertex"] in starts
    assert "ID" in [m for m in msgs if "aux" in m][-1]["aux"]


def test_a_failing_stage_cancels_the_others_and_leaves_no_container(ketchd, tmp_path):
    write_tree(tmp_path, {"Dockerfile": "FROM busybox AS a\nRUN sleep 30\nFROM busybox AS b\nRUN exit 4\n"
                                        "FROM busybox\nCOPY --from=a /etc/hostname /a\n"
                                        "COPY --from=b /etc/hostname /b\n"})
    status, msgs = api_build(ketchd, tmp_path, nocache=1, timeout=25)
    assert status == 200
    assert msgs[-1]["errorDetail"]["code"] == 4, msgs[-1]
    errors = [m["aux"]["ketch"] for m in msgs if m.get("aux", {}).get("ketch", {}).get("event") == "error"]
    assert errors[0]["error"] == 'process "/bin/sh -c exit 4" did not complete successfully: exit code: 4'
    assert ketchd.json("GET", "/containers/json?all=1")[1] == []

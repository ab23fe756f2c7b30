"""Catalog parsing (pure logic): the seed's jobs.csv verbatim, the YAML model, and every refusal
with its line and field. No servers: parsing reads a given text and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from mstc_client.catalog import Concurrency, Trigger
from mstc_client.catalog_files import decode_catalog, guess_format, parse_catalog
from mstc_client.errors import CatalogInvalid

SEED_CSV = Path(__file__).with_name("catalogs") / "seed_jobs.csv"
HEADER = (
    "job_name,image,mqtt_topic,cpu_request,cpu_limit,memory_request,memory_limit,gpu,"
    "disk_request,disk_limit,disk_mount,parallelism"
)


def refused(text: str, *, source: str = "c.yaml", fmt: str | None = None) -> CatalogInvalid:
    with pytest.raises(CatalogInvalid) as caught:
        parse_catalog(text, source=source, fmt=fmt)
    return caught.value


# --- the seed's CSV, unchanged ---------------------------------------------------------------


def test_the_seeds_example_loads_unchanged() -> None:
    catalog = parse_catalog(SEED_CSV.read_text("utf-8"), source="jobs.csv")
    init, processing = catalog.entries
    assert (init.name, init.line, processing.line) == ("init-job", 2, 3)
    assert init.trigger == Trigger("experiments/init-job", "experiments.init-job")
    assert init.request == {
        "image": "braingeneers/job-init:latest",
        "jobName": "init-job",
        "resources": {
            "requests": {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "10Gi"},
            "limits": {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "20Gi"},
        },
    }
    assert processing.trigger is not None
    assert processing.trigger.binding_key == "services.mqtt_job_listener.job_complete.init-job"
    assert processing.request["completions"] == processing.request["parallelism"] == 50
    assert "scratch" not in processing.request
    assert "nvidia.com/gpu" not in str(processing.request)
    assert catalog.matching("services.mqtt_job_listener.job_complete.init-job") == [processing]


def test_a_csv_is_recognised_by_its_header_or_its_name() -> None:
    text = SEED_CSV.read_text("utf-8")
    assert guess_format(text, "catalog") == "csv"
    assert guess_format("entries: []\n", "jobs.CSV") == "csv"
    assert guess_format("entries: []\n", "catalog") == "yaml"
    assert len(parse_catalog("\ufeff" + text, source="from-excel").entries) == 2


def test_gpu_disk_mount_and_columns_in_any_order() -> None:
    text = (
        "image,job_name,gpu,disk_limit,disk_mount,mqtt_topic\n"
        "img:1,train,2,20Gi,/scratch,a/b\n"
        "img:2,idle,,,,\n"
    )
    train, idle = parse_catalog(text, source="jobs.csv").entries
    assert train.request["resources"] == {
        "requests": {"nvidia.com/gpu": "2"},
        "limits": {"ephemeral-storage": "20Gi", "nvidia.com/gpu": "2"},
    }
    assert train.request["scratch"] == {"mountPath": "/scratch", "sizeLimit": "20Gi"}
    assert idle.trigger is None
    assert idle.request == {"image": "img:2", "jobName": "idle"}


def row(**cells: str) -> str:
    values = {"job_name": "job", "image": "img:1", **cells}
    return HEADER + "\n" + ",".join(values.get(c, "") for c in HEADER.split(",")) + "\n"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (row(cpu_request="two"), 2, "cpu_request: 'two' is not a Kubernetes quantity"),
        (row(memory_limit="-1Gi"), 2, "memory_limit: '-1Gi' is not a Kubernetes quantity"),
        (row(disk_request="10GB"), 2, "disk_request: '10GB' is not a Kubernetes quantity"),
        (row(gpu="1.5"), 2, "gpu: '1.5' is not a whole number"),
        (row(parallelism="0"), 2, "parallelism: 0 is out of range"),
        (row(parallelism="x"), 2, "parallelism: 'x' is not a whole number"),
        (row(disk_mount="scratch"), 2, "disk_mount: 'scratch' must be an absolute path"),
        (row(disk_mount="/a/../etc"), 2, "disk_mount: '/a/../etc' must not contain '..'"),
        (row(job_name="Init_Job"), 2, "job_name: 'Init_Job' must be lower-case"),
        (row(image=""), 2, "image: an image is required"),
        (row(mqtt_topic="a/#/b"), 2, "'#' may only be the last level"),
        (row(mqtt_topic="a/b+/c"), 2, "a wildcard must be a whole level"),
        (HEADER.replace("gpu", "gpus") + "\n", 1, "unknown column 'gpus'"),
        ("job_name,image,image\n", 1, "column 'image' appears twice"),
        ("job_name,mqtt_topic\n", 1, "the header lacks the 'image' column"),
        ("job_name,image\na,img\n\nb,img,extra\n", 4, "the row has 3 cells, the header 2"),
        ("job_name,image\na,img\nb,img\na,img\n", 4, "job_name: 'a' is already on line 2"),
        ('job_name,image\na,"img\n', 2, "not valid CSV"),
    ],
)
def test_csv_refusals_name_the_line_and_the_field(text: str, line: int, words: str) -> None:
    error = refused(text, source="jobs.csv")
    assert error.line == line
    assert words in error.reason
    assert str(error).startswith(f"jobs.csv, line {line}: ")


def test_a_quoted_cell_over_two_lines_keeps_the_next_rows_line() -> None:
    text = 'job_name,image\na,"img\n:1"\nb,img:2\nb,img:3\n'
    assert refused(text, source="jobs.csv").line == 5
    # A problem in the two-line row itself is on the line the row starts.
    assert refused('job_name,image\nA,"img\n:1"\n', source="jobs.csv").line == 2


# --- YAML -----------------------------------------------------------------------------------

YAML = """\
entries:
  - name: init-job
    trigger: experiments/init-job
    request:
      image: braingeneers/job-init:latest
      env: {DATASET: "{{ payload.dataset }}", WHY: "fired by {{ topic }}"}
      completions: 2
    concurrency: skip
    maxInFlight: 1
    expectedSeconds: 90.5
  - name: by-hand
    request: {image: "img:1", jobName: custom}
"""


def test_yaml_entries_with_every_field() -> None:
    init, by_hand = parse_catalog(YAML, source="c.yaml").entries
    assert init.line == 2
    assert by_hand.line == 11
    assert init.trigger == Trigger("experiments/init-job", "experiments.init-job")
    assert (init.concurrency, init.max_in_flight) == (Concurrency.SKIP, 1)
    assert (init.expected_seconds, by_hand.expected_seconds) == (90.5, 0)
    assert init.request["jobName"] == "init-job"
    assert by_hand.request["jobName"] == "custom"
    rendered = init.render(b'{"dataset": "d1"}', "experiments/init-job", "f" * 32)
    assert rendered["env"]["DATASET"] == "d1"
    # env values stay texts even when the payload's value is a number (the worker wants texts)
    assert init.render(b'{"dataset": 7}', "t", "f" * 32)["env"]["DATASET"] == "7"
    assert by_hand.trigger is None
    assert by_hand.concurrency is Concurrency.ALLOW


def entry(body: str) -> str:
    return "entries:\n  - name: a\n" + body


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("", 0, "the catalog is empty"),
        ("- a\n", 1, "the catalog: must be a mapping"),
        ("entries: []\nextra: 1\n", 2, "unknown key 'extra'"),
        ("other: 1\n", 1, "unknown key 'other'"),
        ("entries: {a: 1}\n", 1, "entries: must be a list"),
        (entry("    request: {image: i}\n    concurency: skip\n"), 4, "unknown key 'concurency'"),
        (entry(""), 2, "request: a request is required"),
        (entry("    request: [image]\n"), 3, "request: must be a mapping"),
        (entry("    request: {env: {}}\n"), 3, "request.image: an image is required"),
        (entry("    request: {image: i, env: {A: '{{ secret }}'}}\n"), 3, "unknown placeholder"),
        (entry("    request: {image: '{{ payload + 1 }}'}\n"), 3, "is not a placeholder"),
        (entry("    request: {image: i, when: 2024-01-01}\n"), 3, "only JSON values"),
        (entry("    request: {image: i}\n    concurrency: queue\n"), 4, "'queue' is not one of"),
        (entry("    request: {image: i}\n    maxInFlight: -1\n"), 4, "maxInFlight: -1 is out"),
        (entry("    request: {image: i}\n    maxInFlight: yes\n"), 4, "not a whole number"),
        (
            entry("    request: {image: i}\n    expectedSeconds: 0\n"),
            4,
            "expectedSeconds: 0 is out",
        ),
        (entry("    request: {image: i}\n    expectedSeconds: 5m\n"), 4, "not a number of seconds"),
        (entry("    request: {image: i}\n    trigger: 'a b'\n"), 4, "holds white space"),
        ("entries:\n  - name: A\n    request: {image: i}\n", 2, "name: 'A' must be lower-case"),
        ("entries:\n  - request: {image: i}\n", 2, "name: a name is required"),
        (
            "entries:\n  - {name: a, request: {image: i}}\n  - {name: a, request: {image: i}}\n",
            3,
            "name: 'a' is already on line 2",
        ),
        (entry("    request: {image: i}\n    request: {image: j}\n"), 4, "'request' twice"),
        ("entries:\n  - name: a\n   bad: [\n", 3, "not valid YAML"),
    ],
)
def test_yaml_refusals_name_the_line_and_the_field(text: str, line: int, words: str) -> None:
    error = refused(text)
    assert (error.line, words in error.reason) == (line, True), error.reason


def test_yaml_aliases_are_refused_before_anything_expands() -> None:
    bomb = 'a: &a ["x","x"]\nb: &b [*a,*a]\nc: &c [*b,*b]\nentries: [*c]\n'
    error = refused(bomb)
    assert (error.line, "aliases" in error.reason) == (2, True)


def test_hostile_sizes_and_encodings_are_refused() -> None:
    assert "over the limit" in refused("#" * (1024 * 1024 + 1)).reason
    deep = refused("entries: " + "[" * 100_000)
    assert (deep.line, "nested over 32 levels" in deep.reason) == (1, True)
    assert refused("entries: []\n\x00").line == 2
    with pytest.raises(CatalogInvalid) as caught:
        decode_catalog(b"job_name,image\na,\xff\n", source="jobs.csv")
    assert (caught.value.line, "not UTF-8" in caught.value.reason) == (2, True)
    with pytest.raises(CatalogInvalid, match="over the limit"):
        decode_catalog(b" " * (1024 * 1024 + 1), source="big")
    assert refused("entries: []\n", fmt="toml").reason.startswith("unknown catalog format")


def test_the_digest_tells_versions_apart() -> None:
    one = parse_catalog(YAML, source="c.yaml")
    assert one.digest == parse_catalog(YAML, source="c.yaml").digest
    assert one.digest != parse_catalog(YAML + "\n", source="c.yaml").digest

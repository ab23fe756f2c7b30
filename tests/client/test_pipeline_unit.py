"""Pipeline files (pure logic): the worked example, foreach and templates, the graph (stages,
dependants, inferred dependencies), the request each task sends, and every refusal with its
task and field. No servers: the bucket is a callable the test gives."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from mstc_client.errors import PipelineInvalid
from mstc_client.pipeline import Pipeline
from mstc_client.pipeline_fields import FAMILY_KEYS, RANGE_KEYS, REQUEST_FIELDS
from mstc_client.pipeline_files import TOP_KEYS, decode_pipeline, parse_pipeline, schema
from mstc_client.pipeline_tasks import TASK_KEYS
from mstc_worker.request_fields import extra_env

EXAMPLE = Path(__file__).parents[2] / "examples" / "pipelines" / "shards.json"
BROKEN = Path(__file__).with_name("pipelines")


def pipeline_of(*tasks: dict[str, Any], **top: Any) -> Pipeline:
    return parse_pipeline(json.dumps(body(*tasks, **top), indent=1), source="p.json")


def body(*tasks: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "p", "defaults": {"image": "img:1"}, **top, "tasks": list(tasks)}


def refused(*tasks: dict[str, Any], **top: Any) -> PipelineInvalid:
    with pytest.raises(PipelineInvalid) as caught:
        pipeline_of(*tasks, **top)
    return caught.value


def refused_text(text: str, source: str = "p.json") -> PipelineInvalid:
    with pytest.raises(PipelineInvalid) as caught:
        parse_pipeline(text, source=source)
    return caught.value


def example() -> Pipeline:
    return parse_pipeline(EXAMPLE.read_text("utf-8"), source="shards.json")


# --- the worked example ----------------------------------------------------------------------


def test_the_example_runs_in_three_stages() -> None:
    pipeline = example()
    stages = pipeline.stages()
    assert stages == [
        tuple(f"make-{i}" for i in range(8)),
        tuple(f"square-{i}" for i in range(8)),
        ("merge",),
    ]
    assert (len(pipeline.tasks), pipeline.parallelism, pipeline.prefix) == (
        17,
        4,
        "examples/shards",
    )
    assert pipeline.bucket is None
    assert [pipeline.task(n).line for n in ("make-0", "square-7", "merge")] == [13, 20, 28]
    assert pipeline.dependencies()["square-3"] == {"make-3"}
    assert pipeline.dependencies()["merge"] == {f"square-{i}" for i in range(8)}
    assert pipeline.dependants("make-2") == {"square-2", "merge"}
    assert pipeline.dependants("merge") == frozenset()


def test_the_examples_log_range_and_templates() -> None:
    pipeline = example()
    rates = [pipeline.task(f"make-{i}").item for i in range(8)]
    assert (rates[0], rates[-1]) == (0.01, 100.0)
    assert all(b / a == pytest.approx(10 ** (4 / 7)) for a, b in itertools.pairwise(rates))
    make = pipeline.task("make-3")
    assert make.request["args"] == ["--rate", "0.517947467923", "--seed", "3"]
    assert make.outputs == {"shard": "shards/shard-3.json"}
    assert pipeline.task("merge").inputs["results"] == tuple(
        f"results/result-{i}.json" for i in range(8)
    )


# --- requests ---------------------------------------------------------------------------------


def test_a_tasks_request_carries_bucket_prefix_and_its_objects() -> None:
    pipeline = example()
    request = pipeline.request_for(pipeline.task("square-2"), bucket="data")
    assert (request["inputBucket"], request["outputBucket"]) == ("data", "data")
    assert (request["prefix"], request["jobName"]) == ("examples/shards", "square-2")
    assert request["resources"] == {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert request["env"] == {
        "PYTHONUNBUFFERED": "1",
        "MSTC_FLOW_PIPELINE": "shards",
        "MSTC_FLOW_TASK": "square-2",
        "MSTC_FLOW_INDEX": "2",
        "MSTC_FLOW_ITEM": "2",
        "MSTC_FLOW_INPUT_SHARD": "examples/shards/shards/shard-2.json",
        "MSTC_FLOW_OUTPUT_RESULT": "examples/shards/results/result-2.json",
    }
    merge = pipeline.request_for(pipeline.task("merge"), bucket="data")["env"]
    assert merge["MSTC_FLOW_INPUT_RESULTS"].splitlines() == [
        f"examples/shards/results/result-{i}.json" for i in range(8)
    ]
    assert "MSTC_FLOW_INDEX" not in merge


def test_the_worker_accepts_every_env_name_a_task_gets() -> None:
    pipeline = example()
    for task in pipeline.tasks:
        request = pipeline.request_for(task, bucket="data")
        assert extra_env(request) == request["env"]  # the worker's own rule, not restated


def test_the_files_bucket_wins_and_one_is_needed() -> None:
    named = pipeline_of({"name": "a"}, bucket="files-bucket")
    assert named.request_for(named.task("a"), bucket="other")["inputBucket"] == "files-bucket"
    unnamed = pipeline_of({"name": "a"})
    with pytest.raises(PipelineInvalid, match="no bucket"):
        unnamed.request_for(unnamed.task("a"))


def test_defaults_are_merged_key_by_key_and_a_task_replaces_the_rest() -> None:
    pipeline = pipeline_of(
        {"name": "a", "env": {"B": "2", "A": "x"}, "timeOut": 3, "labels": {"k": "v"}},
        defaults={"image": "img:1", "timeOut": 1, "env": {"A": "1", "C": "3"}, "args": ["d"]},
        prefix="runs/p",
    )
    request = pipeline.task("a").request
    assert request == {
        "image": "img:1", "timeOut": 3, "env": {"A": "x", "B": "2", "C": "3"}, "args": ["d"],
        "labels": {"k": "v"},
    }  # fmt: skip


# --- foreach and templates --------------------------------------------------------------------


def test_foreach_over_a_list_fills_every_string_of_the_task() -> None:
    pipeline = pipeline_of(
        {
            "name": "fit",
            "foreach": [{"mass": 1.5, "tag": "lo", "min": 2}, {"mass": 3, "tag": "hi", "min": 5}],
            "args": ["--mass", "{{ item.mass }}", "{{ task }} of {{ pipeline }}"],
            "timeOut": "{{ item.min }}",
            "env": {"TAG": "{{ item.tag }}", "WHOLE": "{{ item }}"},
            "outputs": {"fit": "fits/{{ item.tag }}-{{ index }}.json"},
        }
    )
    first, second = pipeline.tasks
    assert (first.name, first.source, first.index, second.name) == ("fit-0", "fit", 0, "fit-1")
    assert first.request["args"] == ["--mass", "1.5", "fit-0 of p"]
    assert second.request["timeOut"] == 5  # one placeholder alone keeps the value's type
    assert second.request["env"] == {"TAG": "hi", "WHOLE": '{"mass": 3, "tag": "hi", "min": 5}'}
    assert second.outputs == {"fit": "fits/hi-1.json"}


@pytest.mark.parametrize(
    ("spec", "values"),
    [
        ({"start": 0, "end": 70, "count": 8}, [0, 10, 20, 30, 40, 50, 60, 70]),
        ({"start": 0, "end": 1, "count": 3}, [0.0, 0.5, 1.0]),
        ({"start": 1, "end": 1000, "count": 4, "scale": "log"}, [1.0, 10.0, 100.0, 1000.0]),
        ({"end": 5, "count": 1}, [0]),
        ({"start": 0.5, "end": 2, "count": 1, "scale": "log"}, [0.5]),
    ],
)
def test_ranges_expand_to_evenly_spaced_values(spec: dict[str, Any], values: list[Any]) -> None:
    pipeline = pipeline_of({"name": "t", "foreach": spec})
    assert [task.item for task in pipeline.tasks] == values
    assert [type(task.item) for task in pipeline.tasks] == [type(v) for v in values]


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"start": 0, "end": 1, "count": 0}, "foreach.count", "at least 1"),
        ({"start": 0, "end": 1, "count": 2.5}, "foreach.count", "whole number"),
        ({"start": 0, "end": 10, "count": 3, "scale": "log"}, "foreach.start", "above 0"),
        ({"start": 1, "end": -1, "count": 3, "scale": "log"}, "foreach.start", "above 0"),
        ({"start": 0, "end": 1, "count": 1001}, "foreach.count", "1001 values, over 1000 tasks"),
        ({"start": 0, "end": 1, "count": 2, "scale": "cubic"}, "foreach.scale", "linear"),
        ({"start": 0, "end": 1, "count": 2, "step": 1}, "foreach.step", "unknown"),
        ({"start": "0", "end": 1, "count": 2}, "foreach.start", "a number"),
        ([], "foreach", "no task"),
        (list(range(1001)), "foreach", "1001 values, over 1000 tasks"),
        ("abc", "foreach", "a list of values or a range"),
    ],
)
def test_a_bad_foreach_is_refused(spec: Any, field: str, words: str) -> None:
    error = refused({"name": "t", "foreach": spec})
    assert (error.task, error.field) == ("t", field)
    assert words in error.reason


def test_expansions_over_1000_tasks_in_all_are_refused() -> None:
    error = refused(
        {"name": "a", "foreach": {"end": 1, "count": 600}},
        {"name": "b", "foreach": {"end": 1, "count": 401}},
    )
    assert (error.task, error.field, "over 1000 tasks in all" in error.reason) == (
        "b", "foreach", True,
    )  # fmt: skip
    assert len(pipeline_of({"name": "a", "foreach": {"end": 1, "count": 1000}}).tasks) == 1000
    plain = refused(*({"name": f"t{i}"} for i in range(1001)))
    assert (plain.task, plain.field, plain.reason) == ("t1000", "name", "over 1000 tasks in all")


@pytest.mark.parametrize(
    ("task", "field", "words"),
    [
        ({"name": "m", "args": ["{{ index }}"]}, "args.0", "needs a foreach"),
        ({"name": "m", "outputs": {"o": "x-{{ item }}"}}, "outputs.o", "needs a foreach"),
        ({"name": "m", "env": {"A": "{{ payload }}"}}, "env.A", "unknown placeholder"),
        ({"name": "m", "args": ["{{ 1 }}"]}, "args.0", "not a placeholder"),
        ({"name": "m", "foreach": [{"a": 1}], "args": ["{{ item.b }}"]}, "args.0", "no 'b'"),
    ],
)
def test_a_placeholder_the_task_cannot_fill_is_refused(
    task: dict[str, Any], field: str, words: str
) -> None:
    error = refused(task)
    assert error.field == field
    assert words in error.reason


# --- dependencies, stages, dependants ---------------------------------------------------------


def test_after_a_family_means_all_of_it_and_an_expansion_means_one() -> None:
    pipeline = pipeline_of(
        {"name": "prep", "foreach": [1, 2, 3]},
        {"name": "run", "foreach": [1, 2, 3], "after": ["prep-{{ index }}"]},
        {"name": "report", "after": ["run"]},
        {"name": "first", "after": ["prep-0"]},
    )
    deps = pipeline.dependencies()
    assert deps["run-1"] == {"prep-1"}
    assert deps["report"] == {"run-0", "run-1", "run-2"}
    assert deps["first"] == {"prep-0"}
    assert pipeline.stages() == [
        ("prep-0", "prep-1", "prep-2"),
        ("run-0", "run-1", "run-2", "first"),
        ("report",),
    ]
    assert pipeline.dependants("prep-0") == {"run-0", "report", "first"}


def test_a_task_reading_an_object_runs_after_its_writer() -> None:
    pipeline = pipeline_of(
        {"name": "c", "inputs": {"x": "b.out"}},
        {"name": "b", "inputs": {"x": "a.out"}, "outputs": {"y": "b.out"}},
        {"name": "a", "outputs": {"y": "a.out"}},
        {"name": "d"},
    )
    assert pipeline.dependencies() == {
        "c": {"b"}, "b": {"a"}, "a": frozenset(), "d": frozenset(),
    }  # fmt: skip
    assert pipeline.stages() == [("a", "d"), ("b",), ("c",)]
    assert pipeline.dependants("a") == {"b", "c"}


def test_a_family_input_waits_for_every_writer() -> None:
    pipeline = pipeline_of(
        {"name": "w", "foreach": {"end": 2, "count": 3}, "outputs": {"r": "r{{ index }}"}},
        {"name": "all", "inputs": {"rs": {"task": "w", "output": "r"}}},
        {"name": "one", "inputs": {"rs": {"task": "w-1", "output": "r"}}},
    )
    assert pipeline.task("all").inputs == {"rs": ("r0", "r1", "r2")}
    assert pipeline.dependencies()["all"] == {"w-0", "w-1", "w-2"}
    assert pipeline.dependencies()["one"] == {"w-1"}


def test_a_chain_of_1000_tasks_is_1000_stages() -> None:
    tasks = [{"name": "t-0"}] + [
        {"name": f"t-{i}", "after": [f"t-{i - 1}"]} for i in range(1, 1000)
    ]
    pipeline = pipeline_of(*tasks)
    assert len(pipeline.stages()) == 1000
    assert len(pipeline.dependants("t-0")) == 999


# --- refusals of the graph --------------------------------------------------------------------


def test_a_cycle_is_refused_and_printed() -> None:
    error = refused(
        {"name": "a", "after": ["c"]},
        {"name": "b", "after": ["a"], "outputs": {"o": "b.out"}},
        {"name": "c", "inputs": {"i": "b.out"}},
    )
    assert (error.task, error.field) == ("a", "after")
    assert error.reason == "a cycle: a -> b -> c -> a"
    assert str(error).startswith("p.json, line ")


def test_the_example_with_a_cycle_is_refused_naming_the_task_and_field() -> None:
    error = refused_text((BROKEN / "cycle.json").read_text("utf-8"), "cycle.json")
    assert (error.task, error.field, error.line) == ("make-0", "inputs.previous", 13)
    assert error.reason == "a cycle: make-0 -> square-0 -> merge -> make-0"


def test_a_task_after_itself_is_a_cycle() -> None:
    error = refused({"name": "a", "after": ["a"]})
    assert (error.task, error.field, error.reason) == ("a", "after", "a cycle: a -> a")


def test_two_writers_of_one_object_are_refused() -> None:
    error = refused_text((BROKEN / "double_writer.json").read_text("utf-8"), "dw.json")
    assert (error.task, error.field) == ("merge", "outputs.summary")
    assert "already written by task square-3 (outputs.result)" in error.reason
    same = refused({"name": "w", "foreach": [1, 2], "outputs": {"o": "one-object"}})
    assert (same.task, same.field) == ("w-1", "outputs.o")
    roles = refused({"name": "w", "outputs": {"a": "x", "b": "x"}})
    assert (roles.task, roles.field) == ("w", "outputs.b")


def test_an_unknown_after_is_refused() -> None:
    error = refused({"name": "a"}, {"name": "b", "after": ["a", "nope"]})
    assert (error.task, error.field) == ("b", "after")
    assert error.reason == "'nope' is no task of this pipeline"


def test_duplicate_names_after_expansion_are_refused() -> None:
    twice = refused({"name": "a"}, {"name": "a"})
    assert (twice.task, twice.field) == ("a", "name")
    family = refused({"name": "a"}, {"name": "a", "foreach": [1]})  # a, a-0: no expanded clash
    assert (family.task, family.field, family.reason) == ("a", "name", "another task has this name")
    clash = refused({"name": "s-1"}, {"name": "s", "foreach": [1, 2]})
    assert (clash.task, clash.field) == ("s-1", "name")
    assert "names two tasks" in clash.reason
    nested = refused({"name": "x-0", "foreach": [1]}, {"name": "x", "foreach": [1]})
    assert nested.task == "x-0"  # x's expansion x-0 is also the family x-0's name


def test_a_family_reference_must_name_a_task_and_its_output() -> None:
    writer = {"name": "w", "foreach": [1, 2], "outputs": {"r": "r{{ index }}"}}
    unknown = refused(writer, {"name": "m", "inputs": {"x": {"task": "v", "output": "r"}}})
    assert (unknown.task, unknown.field) == ("m", "inputs.x.task")
    no_role = refused(writer, {"name": "m", "inputs": {"x": {"task": "w", "output": "s"}}})
    assert (no_role.field, no_role.reason) == ("inputs.x.output", "task w-0 has no output 's'")
    shape = refused(writer, {"name": "m", "inputs": {"x": {"task": "w"}}})
    assert shape.field == "inputs.x"


def test_input_references_are_bounded() -> None:
    error = refused(
        {"name": "w", "foreach": {"end": 1, "count": 400}, "outputs": {"r": "r{{ index }}"}},
        {"name": "m", "foreach": {"end": 1, "count": 300},
         "inputs": {"x": {"task": "w", "output": "r"}}},
    )  # fmt: skip
    assert (error.field, "over 100000 object references" in error.reason) == ("inputs", True)


# --- inputs from the bucket -------------------------------------------------------------------


def test_an_input_no_task_writes_must_be_in_the_bucket() -> None:
    pipeline = parse_pipeline((BROKEN / "missing_input.json").read_text("utf-8"), source="m.json")
    with pytest.raises(PipelineInvalid) as offline:
        pipeline.check_inputs(None)
    assert (offline.value.task, offline.value.field, offline.value.line) == (
        "square-0", "inputs.shard", 20,
    )  # fmt: skip
    assert (
        offline.value.reason
        == "'shards/shard-0.csv' is written by no task, so it must exist in the bucket"
    )
    asked: list[str] = []

    def exists(key: str) -> bool:
        asked.append(key)
        return key != "examples/shards/shards/shard-5.csv"

    with pytest.raises(PipelineInvalid) as checked:
        pipeline.check_inputs(exists)
    assert (checked.value.task, "is not in the bucket" in checked.value.reason) == (
        "square-5",
        True,
    )
    assert asked[0] == "examples/shards/shards/shard-0.csv"
    pipeline.check_inputs(lambda _key: True)
    example().check_inputs(None)  # every input of the example is written by a task


# --- fields by shape --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "field", "words"),
    [
        ({"name": "a", "command": "python run.py"}, "command", "list of texts"),
        ({"name": "a", "timeOut": -1}, "timeOut", "at least 0"),
        ({"name": "a", "completions": 0}, "completions", "at least 1"),
        ({"name": "a", "completionMode": "indexed"}, "completionMode", "Indexed"),
        (
            {"name": "a", "resources": {"limits": {"cpu": "2 cores"}}},
            "resources.limits.cpu",
            "not a Kubernetes quantity",
        ),
        ({"name": "a", "resources": {"limit": {}}}, "resources", "requests"),
        ({"name": "a", "scratch": {"mountPath": "tmp"}}, "scratch.mountPath", "absolute path"),
        ({"name": "a", "env": {"A": 1}}, "env", "mapping of texts"),
        (
            {"name": "a", "env": {"MSTC_FLOW_INPUT_X": "k"}},
            "env.MSTC_FLOW_INPUT_X",
            "set by the pipeline",
        ),
        ({"name": "a", "env": {"1A": "k"}}, "env.1A", "letters"),
        ({"name": "a", "inputBucket": "b"}, "inputBucket", "set by the pipeline"),
        ({"name": "a", "prefix": "x"}, "prefix", "set by the pipeline"),
        ({"name": "a", "imgae": "x"}, "imgae", "unknown key"),
        ({"name": "a", "image": ""}, "image", "non-empty text"),
        ({"name": "A"}, "name", "lower-case"),
        ({"name": "a" * 62, "foreach": [1]}, "name", "over 63"),
        ({"name": "a", "inputs": {"Data": "x"}}, "inputs.Data", "a role is lower-case"),
        ({"name": "a", "outputs": {"o": "../x"}}, "outputs.o", "without '.', '..'"),
        ({"name": "a", "outputs": {"o": "/x"}}, "outputs.o", "relative"),
        ({"name": "a", "inputs": {"i": "x\ny"}}, "inputs.i", "printable"),
        ({"name": "a", "after": "b"}, "after", "list of task names"),
        ({"name": "a", "inputs": ["x"]}, "inputs", "mapping of role"),
    ],
)
def test_a_bad_field_is_refused_naming_task_and_field(
    task: dict[str, Any], field: str, words: str
) -> None:
    error = refused(task)
    named = None if task["name"] == "A" else task["name"] + ("-0" if "foreach" in task else "")
    assert (error.task, error.field) == (named, field)
    assert words in error.reason, error.reason


def test_an_image_is_required_from_the_task_or_the_defaults() -> None:
    error = refused({"name": "a"}, defaults={"timeOut": 1})
    assert (error.task, error.field) == ("a", "image")
    assert pipeline_of({"name": "a", "image": "own:1"}, defaults={}).task("a").request == {
        "image": "own:1"
    }


@pytest.mark.parametrize(
    ("top", "field", "words"),
    [
        ({"parallelism": 0}, "parallelism", "1 to 1000"),
        ({"parallelism": True}, "parallelism", "1 to 1000"),
        ({"bucket": "Data"}, "bucket", "not a bucket name"),
        ({"prefix": "/abs"}, "prefix", "relative"),
        ({"prefix": "a/../b"}, "prefix", "relative"),
        ({"name": "My Pipeline"}, "name", "lower-case"),
        ({"defaults": {"inputBucket": "x"}}, "defaults.inputBucket", "set by the pipeline"),
        ({"defaults": {"inputs": {}}}, "defaults.inputs", "not a request field"),
        ({"defaults": []}, "defaults", "mapping"),
        ({"tasks": []}, "tasks", "non-empty list"),
        ({"task": []}, "task", "unknown key"),
    ],
)
def test_a_bad_top_level_field_is_refused(top: dict[str, Any], field: str, words: str) -> None:
    data = {**body({"name": "a"}), **top}
    error = refused_text(json.dumps(data))
    assert (error.task, error.field) == (None, field)
    assert words in error.reason


# --- hostile and odd text ---------------------------------------------------------------------


def test_hostile_text_is_refused_early() -> None:
    big = refused_text(" " * (1024 * 1024 + 1))
    assert "over the limit" in big.reason
    with pytest.raises(PipelineInvalid, match="over the limit"):
        decode_pipeline(b" " * (1024 * 1024 + 1), source="p.json")
    deep = refused_text("[" * 100_000 + "]" * 100_000)
    assert "nested over 32 levels" in deep.reason
    nested = body({"name": "a", "env": {}})
    value: Any = "x"
    for _ in range(40):
        value = {"k": value}
    nested["description"] = value
    assert "nested over 32 levels" in refused_text(json.dumps(nested)).reason
    twice = refused_text('{"name": "p", "name": "q", "tasks": []}')
    assert twice.reason == "the key 'name' is written twice in one object"
    assert "NaN is not a JSON value" in refused_text('{"name": NaN}').reason
    bad = refused_text('{"name": "p",\n "tasks": [}')
    assert (bad.line, bad.reason.startswith("not valid JSON")) == (2, True)
    with pytest.raises(PipelineInvalid, match="not UTF-8") as latin:
        decode_pipeline(b'{"name":\n"caf\xe9"}', source="p.json")
    assert latin.value.line == 2


def test_yaml_reads_the_same_and_is_screened_as_the_catalog_is() -> None:
    text = (
        "name: p\ndefaults: {image: 'img:1'}\ntasks:\n"
        "  - name: w\n    foreach: [1, 2]\n    outputs: {o: 'o{{ index }}'}\n"
        "  - name: m\n    inputs: {all: {task: w, output: o}}\n"
    )
    pipeline = parse_pipeline(text, source="p.yaml")
    assert pipeline.stages() == [("w-0", "w-1"), ("m",)]
    assert [task.line for task in pipeline.tasks] == [4, 4, 7]
    alias = refused_text("name: &n p\nprefix: *n\ntasks: []\n", "p.yml")
    assert (alias.line, alias.reason) == (2, "YAML aliases (*name) are not allowed in a pipeline")
    dup = refused_text("name: p\ntasks: []\nname: q\n", "p.yaml")
    assert (dup.line, dup.reason) == (3, "the key 'name' is written twice")
    dated = refused_text("name: p\ndescription: 2024-01-01\ntasks: [{name: a}]\n", "p.yaml")
    assert "only JSON values" in dated.reason
    number_key = refused_text("name: p\ntasks: [{name: a, env: {1: x}}]\n", "p.yaml")
    assert number_key.reason == "keys must be texts; 1 is not"


def test_a_byte_order_mark_is_dropped() -> None:
    text = "\ufeff" + EXAMPLE.read_text("utf-8")
    assert parse_pipeline(text, source="s.json").task("merge").line == 28
    assert decode_pipeline(text.encode("utf-8"), source="s.json") == text[1:]


def test_a_refusal_reads_source_line_task_field_reason() -> None:
    error = refused({"name": "a"}, {"name": "b", "timeOut": "x"})
    assert (
        str(error)
        == "p.json, line 10: task b: timeOut: must be a whole number of at least 0; got 'x'"
    )
    # Line 10 is where the second task's `{` is, as json.dumps(indent=1) writes it.
    assert json.dumps(body({"name": "a"}, {"name": "b"}), indent=1).splitlines()[9] == "  {"


# --- the schema -------------------------------------------------------------------------------


def test_the_schema_names_exactly_the_keys_the_parser_accepts() -> None:
    shipped = schema()
    defs = shipped["$defs"]
    assert set(shipped["properties"]) == TOP_KEYS
    assert set(shipped["required"]) == {"name", "tasks"}
    assert set(defs["request"]["properties"]) == set(REQUEST_FIELDS)
    task_keys = set(defs["task"]["properties"]) | set(defs["request"]["properties"])
    assert task_keys == TASK_KEYS
    assert defs["task"]["allOf"] == [{"$ref": "#/$defs/request"}]
    assert set(defs["range"]["properties"]) == RANGE_KEYS
    assert defs["range"]["properties"]["scale"]["enum"] == ["linear", "log"]
    assert set(defs["family"]["properties"]) == FAMILY_KEYS


def test_the_example_uses_only_keys_the_schema_declares() -> None:
    data = json.loads(EXAMPLE.read_text("utf-8"))
    defs = schema()["$defs"]
    task_keys = set(defs["task"]["properties"]) | set(defs["request"]["properties"])
    assert set(data) <= set(schema()["properties"])
    assert set(data["defaults"]) <= set(defs["request"]["properties"])
    for task in data["tasks"]:
        assert set(task) <= task_keys
        if isinstance(task.get("foreach"), dict):
            assert set(task["foreach"]) <= set(defs["range"]["properties"])

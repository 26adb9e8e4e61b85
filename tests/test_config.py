"""Config: YAML in, one validated object out; bad keys/values fail naming the culprit."""

from pathlib import Path

import pytest

from pipeline.config import PipelineConfig, apply_overrides, load_config
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_default_yaml_equals_builtin_defaults():
    assert load_config(REPO / "configs" / "default.yaml") == PipelineConfig()


def test_none_path_gives_defaults():
    assert load_config(None).model.name == "maskrcnn_demo"


@pytest.mark.parametrize(
    "yaml_text, fragment",
    [
        ("model:\n  nmae: x\n", "unknown key 'model.nmae'"),
        ("batching:\n  batch_size: 0\n", "batching.batch_size"),
        ("batching:\n  batch_size: lots\n", "'lots'"),
        ("model:\n  device: tpu\n", "model.device"),
        ("output:\n  publish: udp://x\n", "udp://x"),
        ("transport:\n  hops: {decode: ipc}\n", "unknown hop 'decode'"),
        ("sauce: 1\n", "unknown key 'sauce'"),
        ("source:\n  reconnect:\n    max_attempts: often\n", "source.reconnect.max_attempts"),
        ("source:\n  reconnect:\n    backoff_max_s: 0.1\n", "backoff_max_s (0.1) is below backoff_initial_s (0.5)"),
        ("supervision:\n  restart_window_s: 0\n", "supervision.restart_window_s"),
        ("model: [1, 2\n", "invalid YAML"),
        ("- 1\n- 2\n", "top level must be a mapping"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, yaml_text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert fragment in str(err.value)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_apply_and_validate():
    config = apply_overrides(PipelineConfig(), {"model.name": "fcn_demo", "output.video": None})
    assert config.model.name == "fcn_demo"
    assert config.output.video is None
    with pytest.raises(ConfigError, match="command line: batching.batch_size"):
        apply_overrides(config, {"batching.batch_size": -3})


def test_the_readme_config_example_is_valid(tmp_path):
    """The example users copy from the README must load as it stands."""
    from conftest import REPO

    text = (REPO / "README.md").read_text()
    start = text.index("```yaml", text.index("## Configuration")) + len("```yaml")
    example = tmp_path / "example.yaml"
    example.write_text(text[start:text.index("```", start)])
    config = load_config(example)
    assert config.resources.light_nice == 10 and config.model.backend_options.precision == "int8"

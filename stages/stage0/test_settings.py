"""Bad deploy settings fail before anything is created, saying what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import load_settings
from harness.errors import ConfigError


def test_unknown_region_is_refused() -> None:
    """A region AWS does not have is refused with an example of a real one."""
    with pytest.raises(
        ConfigError, match=r"unknown AWS region 'moon-east-1'.*us-east-1"
    ):
        load_settings(region="moon-east-1", environ={})


def test_malformed_env_file_is_refused_with_its_line(tmp_path: Path) -> None:
    """A line of aws.env that is not KEY=value is named by file and line."""
    env_file = tmp_path / "aws.env"
    env_file.write_text("AWS_REGION=us-east-1\nthis is not a setting\n")

    with pytest.raises(ConfigError, match=r"aws.env:2: .*KEY=value"):
        load_settings(env_file=env_file, environ={})


def test_misspelt_env_file_key_lists_the_known_keys(tmp_path: Path) -> None:
    """An unknown key in aws.env is refused with the list of keys the harness reads."""
    env_file = tmp_path / "aws.env"
    env_file.write_text("AWS_REGOIN=us-east-1\n")

    with pytest.raises(ConfigError, match=r"unknown key 'AWS_REGOIN'.*AWS_REGION"):
        load_settings(env_file=env_file, environ={})


def test_unknown_stage_is_refused() -> None:
    """A stage that the plan does not have is refused with the list of stages."""
    with pytest.raises(ConfigError, match=r"no stage '11'.*0, 0.5, 1"):
        load_settings(stage="11", environ={})

"""The CLI skeleton: version, help, info, and the one-line error contract."""

from __future__ import annotations

import json

from click.testing import CliRunner

from edgekit import EdgekitError, __version__
from edgekit.cli.main import cli


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_help_lists_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("info", "bench-kernels"):
        assert command in result.output


def test_info_json_reports_isa():
    result = CliRunner().invoke(cli, ["info", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["isa"] in data["isas_available"]
    assert "ref" in data["isas_compiled"]


def test_user_error_is_one_line_exit_2():
    @cli.command("_raise-for-test", hidden=True)
    def _raise():
        raise EdgekitError("no such model 'foo'")

    try:
        result = CliRunner().invoke(cli, ["_raise-for-test"])
    finally:
        cli.commands.pop("_raise-for-test")
    assert result.exit_code == 2
    assert result.output.strip() == "edgekit: error: no such model 'foo'"
    assert "Traceback" not in result.output


def test_unknown_command_is_usage_error():
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit) or result.exception is None
    assert "No such command" in result.output


def test_bad_isa_override_is_one_line_error(monkeypatch):
    monkeypatch.setenv("EDGEKIT_ISA", "bogus")
    result = CliRunner().invoke(cli, ["info"])
    assert result.exit_code == 2
    assert result.output.startswith("edgekit: error: EDGEKIT_ISA")
    assert len(result.output.strip().splitlines()) == 1


def test_bad_option_value_is_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["bench-kernels", "--json", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: Invalid value for '--json'")

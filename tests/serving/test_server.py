"""serving/server.py's command line (`glcic_tf.serving.server` runs what it parses): flags
checked before anything loads, in-process. The server it starts is what the REST contract
tests (test_rest_api.py) run against."""

import pytest

from helpers.scripts import load_script


@pytest.mark.parametrize("args,match", [
    ([], "exactly one of --model_base_path and --model_config_file"),
    (["--model_base_path", "x", "--model_config_file", "y"], "exactly one of"),
    (["--model_base_path", "x", "--max_body_bytes", "0"], "--max_body_bytes must be >= 1"),
    (["--model_base_path", "x", "--file_system_poll_wait_seconds", "-1"], "must be >= 0"),
    (["--model_config_file", "/nonexistent/models.config"], "no such file"),
])
def test_server_cli_rejects_bad_flags(args, match, capsys):
    cli = load_script("serving/server.py")
    with pytest.raises(SystemExit) as e:
        cli.parse_args(args)
    assert e.value.code == 2
    assert match in capsys.readouterr().err


def test_server_flags(capsys):
    cli = load_script("serving/server.py")
    base = ["--model_base_path", "models/glcic_photos128"]
    args = cli.parse_args(base)
    assert args.ui is True and args.inbrowser is False
    args = cli.parse_args(base + ["--no-ui"])
    assert args.ui is False
    with pytest.raises(SystemExit) as e:
        cli.parse_args(base + ["--no-ui", "--inbrowser"])
    assert e.value.code == 2
    assert "--inbrowser opens the completion page" in capsys.readouterr().err

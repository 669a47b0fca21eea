"""liveport.conf: keys are the daemons' flags one to one; precedence flag > environment >
the program's table > shared keys > default; unknown keys and bad values are one line."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from liveport.cli import daemons, options
from liveport.model.errors import InvalidInput, NotFound
from liveport.runtime import config

NOT_KEYS = {"--help", "--config", "--version"}


def _flags(add: daemons.Adder) -> set[str]:
    parser = argparse.ArgumentParser()
    add(parser)
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--")} - NOT_KEYS


@pytest.mark.parametrize(
    ("add", "table"),
    [(daemons.add_northd_options, options.NORTHD), (daemons.add_agent_options, options.AGENT)],
)
def test_keys_match_the_flags_one_to_one(add: daemons.Adder, table: tuple[config.Option]) -> None:
    assert _flags(add) == {f"--{o.key}" for o in table}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "liveport.conf"
    path.write_text(text)
    return path


def _northd(argv: list[str], path: Path | None, env: dict[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    daemons.add_northd_options(parser)
    args = parser.parse_args(argv)
    config.resolve(args, options.NORTHD, "northd", config.load(path, options.PROGRAMS, env), env)
    return args


def test_precedence_flag_environment_table_shared_default(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'nb-db = "tcp:shared:1"\nsb-db = "tcp:shared:2"\nlog-level = "warn"\n'
        '[northd]\nsb-db = "tcp:table:2"\ndead-after = 3\n'
        "[agent]\nheartbeat = 0.5\n",
    )
    args = _northd([], path, {})
    assert (args.nb_db, args.sb_db, args.dead_after, args.log_level) == (
        "tcp:shared:1",
        "tcp:table:2",
        3.0,
        "warn",
    )
    assert args.log_format == "text" and args.pidfile is None  # defaults
    args = _northd([], path, {"LIVEPORT_SB_DB": "tcp:env:2", "OVN_NB_DB": "tcp:env:1"})
    assert (args.nb_db, args.sb_db) == ("tcp:env:1", "tcp:env:2")
    args = _northd(["--sb-db", "tcp:flag:2"], path, {"LIVEPORT_SB_DB": "tcp:env:2"})
    assert args.sb_db == "tcp:flag:2"


def test_optional_paths_and_switches(tmp_path: Path) -> None:
    path = _write(tmp_path, 'pidfile = true\nlog-file = "/var/log/x.log"\ndetach = true\n')
    args = _northd([], path, {})
    assert args.pidfile is True and args.log_file == Path("/var/log/x.log") and args.detach
    args = _northd(["--pidfile=/run/n.pid", "--log-file"], path, {})
    assert args.pidfile == Path("/run/n.pid") and args.log_file is True
    relative = _northd(["--pidfile", "n.pid"], None, {})
    assert relative.pidfile == Path.cwd() / "n.pid"  # absolute: --detach changes to /


def test_tls_comes_from_one_source(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[northd]\nprivate-key = "/k"\ncertificate = "/c"\nca-cert = "/ca"\n',
    )
    args = _northd([], path, {})
    assert (args.private_key, args.certificate, args.ca_cert) == (
        Path("/k"),
        Path("/c"),
        Path("/ca"),
    )
    # The environment names one of them: the file gives none (no mixed identities).
    args = _northd([], path, {"LIVEPORT_PRIVATE_KEY": "/env-k"})
    assert (args.private_key, args.certificate) == (Path("/env-k"), None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nb_db = 'x'\n", "nb_db: unknown key"),
        ("[northd]\nheartbeat = 1\n", "[northd] heartbeat: unknown key"),
        ("[agent]\nheartbeat = 'soon'\n", "[agent] heartbeat: expected a number, not 'soon'"),
        ("detach = 'yes please'\n", "detach: expected true or false"),
        ("log-level = 'loud'\n", "log-level: expected one of dbg, debug"),
        ("[northd]\npidfile = 3\n", "[northd] pidfile: expected true, false or a path"),
        ("northd = 1\n", "[northd] must be a table"),
        ("nb-db = \n", "Invalid value"),
        ("[nope]\nx = 1\n", "nope: unknown key (tables: [northd], [agent], [client])"),
    ],
)
def test_mistakes_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(InvalidInput) as caught:
        config.load(path, options.PROGRAMS, {})
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_which_file(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        config.load(tmp_path / "missing.conf", options.PROGRAMS, {})
    with pytest.raises(NotFound):
        config.load(None, options.PROGRAMS, {config.CONFIG_ENV: str(tmp_path / "missing")})
    path = _write(tmp_path, "nb-db = 'unix:/x'\n")
    assert config.load(None, options.PROGRAMS, {config.CONFIG_ENV: str(path)}).shared == {
        "nb-db": "unix:/x"
    }
    assert config.config_path(None, {}) == (config.DEFAULT_PATH, False)


def test_the_example_file_is_valid() -> None:
    example = Path(__file__).parents[2] / "packaging" / "liveport.conf"
    loaded = config.load(example, options.PROGRAMS, {})
    assert set(loaded.tables) == {"northd", "agent", "client"}


def test_daemons_report_a_bad_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "[northd]\ndead-after = 'later'\n")
    assert daemons.northd_main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"liveport-northd: error: {path}: [northd] dead-after: expected a number, not 'later'\n"
    )
